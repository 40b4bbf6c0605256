//go:build ignore

// Command modzip writes a Go module zip (the format of golang.org/x/mod/zip, which the go
// command checks when it downloads one) from a directory holding exactly the module's files:
// every entry is module@version/path, only regular files, sorted, with a fixed time so that the
// same files give the same zip. Used by dist.sh (standard library only, so it needs no
// download):
//
//	go run modzip.go -module M -version vX.Y.Z -dir STAGE -out vX.Y.Z.zip
package main

import (
	"archive/zip"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The go command's limits (golang.org/x/mod/zip): the whole uncompressed module, and go.mod.
const (
	maxZipFile = 500 << 20
	maxGoMod   = 16 << 20
)

func main() {
	module := flag.String("module", "", "module path")
	version := flag.String("version", "", "version, vX.Y.Z")
	dir := flag.String("dir", "", "the directory of the module's files")
	out := flag.String("out", "", "the zip to write")
	flag.Parse()
	if *module == "" || !strings.HasPrefix(*version, "v") || *dir == "" || *out == "" {
		log.Fatal("modzip: -module, -version vX.Y.Z, -dir and -out are needed")
	}
	var files []string
	var total int64
	err := filepath.WalkDir(*dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", path)
		}
		rel, err := filepath.Rel(*dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel != "go.mod" && filepath.Base(rel) == "go.mod" {
			return fmt.Errorf("%s: a nested module does not belong in this one's zip", rel)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if rel == "go.mod" && info.Size() > maxGoMod {
			return fmt.Errorf("go.mod is over %d bytes", maxGoMod)
		}
		total += info.Size()
		files = append(files, rel)
		return nil
	})
	if err != nil {
		log.Fatalf("modzip: %v", err)
	}
	if total > maxZipFile {
		log.Fatalf("modzip: %d bytes uncompressed, over the go command's %d", total, maxZipFile)
	}
	sort.Strings(files)
	if i := sort.SearchStrings(files, "go.mod"); i == len(files) || files[i] != "go.mod" {
		log.Fatal("modzip: no go.mod at the module's root")
	}
	f, err := os.Create(*out)
	if err != nil {
		log.Fatalf("modzip: %v", err)
	}
	zw := zip.NewWriter(f)
	stamp := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	prefix := *module + "@" + *version + "/"
	for _, rel := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: prefix + rel, Method: zip.Deflate, Modified: stamp})
		if err != nil {
			log.Fatalf("modzip: %v", err)
		}
		src, err := os.Open(filepath.Join(*dir, filepath.FromSlash(rel)))
		if err != nil {
			log.Fatalf("modzip: %v", err)
		}
		if _, err := io.Copy(w, src); err != nil {
			log.Fatalf("modzip: %s: %v", rel, err)
		}
		src.Close()
	}
	if err := zw.Close(); err != nil {
		log.Fatalf("modzip: %v", err)
	}
	if err := f.Close(); err != nil {
		log.Fatalf("modzip: %v", err)
	}
	fmt.Printf("modzip: %s: %d files, %d bytes uncompressed\n", *out, len(files), total)
}
