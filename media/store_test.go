package media

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func storeTmpEntries(t *testing.T, fs *fileStore) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(fs.root, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestStoreWriteDedupAndLimit(t *testing.T) {
	fs, err := newFileStore(filepath.Join(t.TempDir(), "media"))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("some content")
	sum1, n, err := fs.write(bytes.NewReader(data), 100)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("write: %v, %d", err, n)
	}
	if want := filepath.Join(fs.root, sum1[:2], sum1[2:4], sum1); fs.path(sum1) != want {
		t.Fatalf("path %s, want %s", fs.path(sum1), want)
	}
	sum2, _, err := fs.write(bytes.NewReader(data), int64(len(data))) // exactly at the limit
	if err != nil || sum2 != sum1 {
		t.Fatalf("second write: %v, %s vs %s", err, sum2, sum1)
	}
	got, err := os.ReadFile(fs.path(sum1))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored %q, %v", got, err)
	}
	if _, _, err := fs.write(strings.NewReader("this is far too long"), 5); !errors.Is(err, errTooLarge) {
		t.Fatalf("oversize write: %v", err)
	}
	if n := storeTmpEntries(t, fs); n != 0 {
		t.Fatalf("%d temp files left", n)
	}
	f, err := fs.open(sum1)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := fs.open("../../etc/passwd"); err == nil {
		t.Fatal("opened a bad hash")
	}
}

func TestStoreClearsTempOnStart(t *testing.T) {
	root := filepath.Join(t.TempDir(), "media")
	fs, err := newFileStore(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp", "upload-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fs, err = newFileStore(root); err != nil {
		t.Fatal(err)
	}
	if n := storeTmpEntries(t, fs); n != 0 {
		t.Fatalf("%d temp files survived a restart", n)
	}
}
