// The Go classify example: its own module, using the bindings from this checkout.
module github.com/libtimm/timm/examples/go/classify

go 1.22

require github.com/libtimm/timm/bindings/go v0.0.0

replace github.com/libtimm/timm/bindings/go => ../../../bindings/go
