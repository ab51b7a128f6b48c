package clientapi_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

const benchMediaSize = 10 << 20

// BenchmarkMediaUpload10MiB uploads distinct 10 MiB files (each hashed,
// fsynced and renamed into the store) over real HTTP.
func BenchmarkMediaUpload10MiB(b *testing.B) {
	srv := testserver.Start(b)
	token := srv.Register("bench", "password1").AccessToken
	data := randomBytes(b, benchMediaSize)
	b.SetBytes(benchMediaSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint64(data, uint64(i)) // distinct content: no dedup
		hr, _ := http.NewRequest(http.MethodPost, srv.URL+mediaLegacy+"/upload?filename=bench.bin", bytes.NewReader(data))
		hr.Header.Set("Authorization", "Bearer "+token)
		hr.Header.Set("Content-Type", "application/octet-stream")
		res, err := httpClient.Do(hr)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("upload: %d", res.StatusCode)
		}
	}
}

// BenchmarkMediaDownload10MiB downloads a 10 MiB file through the
// authenticated endpoint.
func BenchmarkMediaDownload10MiB(b *testing.B) {
	srv := testserver.Start(b)
	token := srv.Register("bench", "password1").AccessToken
	id := uploadOK(b, srv, token, "application/octet-stream", "bench.bin", randomBytes(b, benchMediaSize))
	b.SetBytes(benchMediaSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		hr, _ := http.NewRequest(http.MethodGet, srv.URL+mediaV1+"/download/"+id, nil)
		hr.Header.Set("Authorization", "Bearer "+token)
		res, err := httpClient.Do(hr)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || n != benchMediaSize {
			b.Fatalf("download: %d, %d bytes", res.StatusCode, n)
		}
	}
}
