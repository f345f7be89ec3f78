module github.com/libtimm/timm/bindings/go

go 1.22

