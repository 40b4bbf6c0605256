module github.com/easdirect/libeasdirect/examples/go

go 1.24

require github.com/easdirect/libeasdirect/bindings/go v0.0.0

replace github.com/easdirect/libeasdirect/bindings/go => ../../bindings/go
