package timm_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	timm "github.com/libtimm/timm/bindings/go"
)

// fakeHub serves one repository's files the way huggingface.co's /resolve/ endpoint does
// (X-Repo-Commit, sha256 ETag, Content-Length), enough for libtimm's hf-hub: downloads.
func fakeHub(t *testing.T, repo string, files map[string][]byte) *httptest.Server {
	const commit = "0123456789abcdef0123456789abcdef01234567"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /{repo}/resolve/{main or the commit}/{file}
		rest, found := strings.CutPrefix(r.URL.Path, "/"+repo+"/resolve/")
		rev, file, _ := strings.Cut(rest, "/")
		data, ok := files[file]
		if !found || (rev != "main" && rev != commit) || !ok {
			w.Header().Set("X-Error-Code", "EntryNotFound")
			http.NotFound(w, r)
			return
		}
		sum := sha256.Sum256(data)
		w.Header().Set("X-Repo-Commit", commit)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(data)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestProgressDuringHubDownload(t *testing.T) {
	dir := filepath.Join(fixturesDir(t), resnet(t).Folders["native"])
	files := map[string][]byte{}
	for _, name := range []string{"config.json", "model.safetensors"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	srv := fakeHub(t, "timm/test_resnet", files)

	var mu sync.Mutex
	finished := map[uint64]bool{} // file sizes whose download reported done == total
	calls := 0
	m, err := timm.CreateModel("hf-hub:timm/test_resnet", true,
		timm.WithEndpoint(srv.URL), timm.WithCacheDir(t.TempDir()), timm.WithOffline(false), timm.WithToken(""),
		timm.WithProgress(func(done, total uint64) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if done > total {
				t.Errorf("progress %d of %d", done, total)
			}
			if done == total {
				finished[total] = true
			}
		}))
	if err == nil {
		defer m.Close()
	} else if !errors.Is(err, timm.ErrUnsupported) {
		// The download must work; building the model may not yet (safetensors-only repos need a
		// native graph builder for the architecture, which a build may lack).
		t.Fatalf("CreateModel from the fake hub: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d progress calls; model: %v", calls, err)
	if !finished[uint64(len(files["model.safetensors"]))] {
		t.Errorf("no completed progress for model.safetensors (%d calls, finished sizes %v)", calls, finished)
	}
}
