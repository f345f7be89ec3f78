// Command classify prints each image's top-5 classes with a timm model, through libtimm's Go
// package.
//
//	classify <spec> <image> [<image> ...]    e.g. classify local:.models/tf_efficientnet_lite0.in1k cat.png
//
// Build against an install (scripts/install <prefix>), in this folder:
//
//	PKG_CONFIG_PATH=<prefix>/lib/pkgconfig go build
package main

import (
	"fmt"
	"os"

	timm "github.com/libtimm/timm/bindings/go"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintf(os.Stderr, "usage: %s <spec> <image> [<image> ...]\n", os.Args[0])
		os.Exit(2)
	}
	model, err := timm.CreateModel(os.Args[1], true)
	if err != nil {
		fmt.Fprintf(os.Stderr, "classify: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}

	// k must not exceed the class count (small test models have fewer than 5).
	k := min(5, model.NumClasses())
	rc := 0
	for _, path := range os.Args[2:] {
		top, err := model.ClassifyFile(path, k)
		if err != nil { // one bad file does not stop the others
			fmt.Fprintf(os.Stderr, "classify: %s: %v\n", path, err)
			rc = 1
			continue
		}
		fmt.Println(path)
		for r, c := range top {
			// Descriptions ("tiger cat") read better than label names ("n02123159"); either may be empty.
			name, extra := c.Description, ""
			if name == "" {
				name = c.Label
			} else if c.Label != "" {
				extra = "  " + c.Label
			}
			if name == "" {
				name = fmt.Sprintf("class %d", c.Index)
			}
			fmt.Printf("  %d. %-28s %6.2f%%  (class %d, logit %.3f)%s\n", r+1, name, 100*c.Probability, c.Index, c.Logit, extra)
		}
	}
	model.Close() // before os.Exit, which would skip a deferred Close
	os.Exit(rc)
}
