package filestore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/testpeers"
)

var uploadSizes = flag.String("upload-sizes", "64MiB,512MiB,2GiB", "sizes of the uploads of BenchmarkUploadMemory")

// stream is size pseudo-random bytes, generated as they are read: a file
// of gigabytes that takes no disk and no memory.
func stream(size int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{42}), size)
}

// peakHeap samples the live heap every 5 ms until stop is called, and
// returns the highest sample.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	go func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); return peak.Load() }
}

// peakRSS resets the kernel's high-water mark of this process's resident
// memory and returns a function that reads it (0 where Linux does not
// allow it).
func peakRSS() func() uint64 {
	if os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) != nil {
		return func() uint64 { return 0 }
	}
	return func() uint64 {
		b, _ := os.ReadFile("/proc/self/status")
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return kb << 10
			}
		}
		return 0
	}
}

// BenchmarkUploadMemory uploads generated streams of growing sizes (up to
// 2 GiB; -upload-sizes changes them) to the S3 backend (the test S3
// server keeping its parts on disk) and to the Local backend, the
// alternative, one after the other for each size, and reports each
// upload's throughput and the peak of this process's live heap and
// resident memory while it ran. Flat memory is the same peak at every
// size: one part in memory for S3, a copy buffer for Local.
//
//	go test -run XXX -bench UploadMemory -benchtime 1x ./internal/filestore/
func BenchmarkUploadMemory(b *testing.B) {
	ctx := context.Background()
	srv := testpeers.StartS3(b, testpeers.S3Options{OnDisk: true})
	b.Setenv(filestore.EnvAccessKeyID, srv.Key.ID)
	b.Setenv(filestore.EnvSecretAccessKey, srv.Key.Secret)
	s3, err := filestore.NewS3(filestore.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Region: srv.Region, Prefix: "bench/"})
	if err != nil {
		b.Fatal(err)
	}
	local, err := filestore.NewLocal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range strings.Split(*uploadSizes, ",") {
		size, err := humanize.ParseBytes(s)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, stream(int64(size)))
		sha := hex.EncodeToString(h.Sum(nil))
		for _, be := range []struct {
			name string
			b    filestore.Backend
		}{{"S3", s3}, {"Local", local}} {
			b.Run(fmt.Sprintf("%s/%s", be.name, s), func(b *testing.B) {
				b.SetBytes(int64(size))
				var heap, rss uint64
				for range b.N {
					runtime.GC()
					stopHeap, readRSS := peakHeap(), peakRSS()
					if err := be.b.Put(ctx, sha, int64(size), stream(int64(size))); err != nil {
						b.Fatal(err)
					}
					heap, rss = max(heap, stopHeap()), max(rss, readRSS())
					b.StopTimer()
					if err := be.b.Delete(ctx, sha); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(heap)/(1<<20), "peak-heap-MiB")
				b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
			})
		}
	}
}
