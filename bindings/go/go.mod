module github.com/easdirect/libeasdirect/bindings/go

go 1.24
