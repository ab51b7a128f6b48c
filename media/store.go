package media

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// fileStore keeps content by its SHA-256 under root, as ab/cd/abcd...: the
// same bytes uploaded twice are one file. A file appears under its final
// name only once complete and synced (written to tmp/, fsynced, renamed,
// directory fsynced), so a crash never leaves a half file to be served.
//
// Files are shared, so one is deleted only when no row names it. mu keeps
// that check and the unlink (write lock) from running between a write's
// finding or placing a file and the insert of the row that names it
// (read lock, held from write until the caller's release).
type fileStore struct {
	root string
	mu   sync.RWMutex
}

func newFileStore(root string) (*fileStore, error) {
	tmp := filepath.Join(root, "tmp")
	// Leftovers of uploads a crash interrupted: nothing refers to them.
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("clear media temp dir: %w", err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create media store: %w", err)
	}
	return &fileStore{root: root}, nil
}

// path is where the content with the given hex SHA-256 lives.
func (fs *fileStore) path(sum string) string {
	return filepath.Join(fs.root, sum[0:2], sum[2:4], sum)
}

// errTooLarge is returned by write when src holds more than max bytes.
var errTooLarge = errors.New("content too large")

// write stores up to max bytes from src and returns their SHA-256 (hex)
// and size. More than max bytes is errTooLarge, and nothing is stored.
// On success the store's read lock is held: the caller records the file in
// a row, then calls release.
func (fs *fileStore) write(src io.Reader, max int64) (sum string, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(fs.root, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("create temp file: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// One byte past the limit tells an oversize body from one exactly
	// at it, without trusting Content-Length.
	size, err = io.Copy(io.MultiWriter(tmp, h), io.LimitReader(src, max+1))
	if err != nil {
		return "", 0, err
	}
	if size > max {
		return "", 0, errTooLarge
	}
	sum = hex.EncodeToString(h.Sum(nil))
	final := fs.path(sum)
	fs.mu.RLock()
	defer func() {
		if err != nil {
			fs.mu.RUnlock()
		}
	}()
	if _, err := os.Stat(final); err == nil {
		return sum, size, nil // already stored: the deferred clean-up drops tmp
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("sync temp file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("close temp file: %w", err)
	}
	name := tmp.Name()
	tmp = nil
	if err := fs.place(name, final); err != nil {
		os.Remove(name)
		return "", 0, err
	}
	return sum, size, nil
}

// release ends what a successful write began, once its row is written.
func (fs *fileStore) release() { fs.mu.RUnlock() }

// removeUnused deletes the files of sums that referenced says no row
// names any more, and returns how many it deleted.
func (fs *fileStore) removeUnused(sums []string, referenced func(sum string) (bool, error)) (int, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, sum := range sums {
		if len(sum) != 64 {
			continue
		}
		used, err := referenced(sum)
		if err != nil {
			return n, err
		}
		if used {
			continue
		}
		if err := os.Remove(fs.path(sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, fmt.Errorf("delete media file: %w", err)
		}
		n++
	}
	return n, nil
}

// writeBytes stores data (a generated thumbnail), as write.
func (fs *fileStore) writeBytes(data []byte) (string, error) {
	sum, _, err := fs.write(bytes.NewReader(data), int64(len(data)))
	return sum, err
}

// place renames the synced file at tmp to final and syncs the directories
// it created or changed, so the new name survives a crash.
func (fs *fileStore) place(tmp, final string) error {
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create media dir: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("store media file: %w", err)
	}
	for _, d := range []string{dir, filepath.Dir(dir), fs.root} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open media dir: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync media dir: %w", err)
	}
	return nil
}

// open opens the content with the given SHA-256.
func (fs *fileStore) open(sum string) (*os.File, error) {
	if len(sum) != 64 {
		return nil, fmt.Errorf("bad content hash %q", sum)
	}
	return os.Open(fs.path(sum))
}
