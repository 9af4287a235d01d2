package store_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// readLive reads a request's whole live log from offset.
func readLive(t *testing.T, s *store.SQL, id, offset int64) (string, int64, bool) {
	t.Helper()
	data, from, running, err := s.ReadLiveLog(context.Background(), id, offset, 0)
	must(t, err)
	return string(data), from, running
}

func TestLiveLog(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		wr := f.worker(t, "amd64")
		if _, _, running := readLive(t, f.s, wr.ID, 0); running {
			t.Fatal("a pending request has no live log")
		}
		claimed, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		attempt := claimed.Retries
		if got, from, running := readLive(t, f.s, wr.ID, 0); !running || got != "" || from != 0 {
			t.Fatalf("a request that runs without a log yet: %q from %d, running %v", got, from, running)
		}

		must(t, f.s.AppendLiveLog(ctx, wr.ID, attempt, 0, []byte("hello\n")))
		must(t, f.s.AppendLiveLog(ctx, wr.ID, attempt, 6, []byte("wor")))
		// a runner that reconnected resends from what it knew was sent,
		// cut differently: overlaps are read once
		must(t, f.s.AppendLiveLog(ctx, wr.ID, attempt, 6, []byte("world\n")))
		must(t, f.s.AppendLiveLog(ctx, wr.ID, attempt, 8, []byte("rld\nbytes \x00\xff\n")))
		want := "hello\nworld\nbytes \x00\xff\n"
		if got, from, _ := readLive(t, f.s, wr.ID, 0); got != want || from != 0 {
			t.Fatalf("read %q from %d, want %q from 0", got, from, want)
		}
		if got, from, _ := readLive(t, f.s, wr.ID, 9); got != want[9:] || from != 9 {
			t.Fatalf("read %q from %d, want %q from 9", got, from, want[9:])
		}
		if got, from, _ := readLive(t, f.s, wr.ID, int64(len(want))); got != "" || from != int64(len(want)) {
			t.Fatalf("read %q from %d at the end", got, from)
		}
		if data, _, _, err := f.s.ReadLiveLog(ctx, wr.ID, 0, 4); err != nil || string(data) != "hell" {
			t.Fatalf("limit 4: %q, %v", data, err)
		}

		// bytes lost while the runner was out of touch: the log picks up
		// after the gap, and the next read goes on from there
		end := int64(len(want))
		must(t, f.s.AppendLiveLog(ctx, wr.ID, attempt, end+100, []byte("after the gap\n")))
		if got, from, _ := readLive(t, f.s, wr.ID, end); got != "after the gap\n" || from != end+100 {
			t.Fatalf("across a gap: %q from %d, want %q from %d", got, from, "after the gap\n", end+100)
		}
		if got, _, _ := readLive(t, f.s, wr.ID, 0); got != want {
			t.Fatalf("a read from 0 stops at the gap: got %q", got)
		}

		// a stale runner's chunks (an older attempt) are never read
		must(t, f.s.AppendLiveLog(ctx, wr.ID, attempt-1, 0, []byte("stale attempt, much longer than the first chunk\n")))
		if got, _, _ := readLive(t, f.s, wr.ID, 0); got != want {
			t.Fatalf("an old attempt's chunk leaked into the log: %q", got)
		}
		if err := f.s.AppendLiveLog(ctx, 1<<40, 0, 0, []byte("x")); err == nil {
			t.Fatal("a chunk of a request that does not exist was stored")
		}
		fieldError(t, f.s.AppendLiveLog(ctx, wr.ID, attempt, -1, []byte("x")), "offset", store.Invalid)

		// requeued: the next attempt starts a log of its own, and the
		// sweep takes what nobody will read
		if _, err := f.s.RequeueWorkRequest(ctx, wr.ID, f.amd64.ID, "test"); err != nil {
			t.Fatal(err)
		}
		if _, _, running := readLive(t, f.s, wr.ID, 0); running {
			t.Fatal("a requeued request has no live log")
		}
		next, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if next.ID != wr.ID || next.Retries != attempt+1 {
			t.Fatalf("claimed %d (retries %d), want %d again", next.ID, next.Retries, wr.ID)
		}
		must(t, f.s.AppendLiveLog(ctx, wr.ID, next.Retries, 0, []byte("second attempt\n")))
		if got, _, _ := readLive(t, f.s, wr.ID, 0); got != "second attempt\n" {
			t.Fatalf("second attempt reads %q", got)
		}
		n, err := f.s.SweepLiveLogs(ctx)
		must(t, err)
		if n != 5 {
			t.Fatalf("swept %d chunks, want the first attempt's 4 and the stale one", n)
		}
		if got, _, _ := readLive(t, f.s, wr.ID, 0); got != "second attempt\n" {
			t.Fatalf("the sweep took the running attempt's log: %q", got)
		}
		must(t, f.s.DropLiveLog(ctx, wr.ID, next.Retries))
		if got, _, _ := readLive(t, f.s, wr.ID, 0); got != "" {
			t.Fatalf("dropped, yet %q", got)
		}
	})
}

// TestLiveLogKeepsTheNewest: a log past MaxLiveLog keeps its newest
// bytes, in chunks no longer than MaxLiveLogChunk.
func TestLiveLogKeepsTheNewest(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		wr := f.worker(t, "amd64")
		_, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		var all bytes.Buffer
		for i := 0; all.Len() < store.MaxLiveLog+3*(1<<20); i++ {
			line := []byte(fmt.Sprintf("%07d %s\n", i, bytes.Repeat([]byte{'x'}, 1000)))
			chunk := bytes.Repeat(line, 200) // 200 KB: cut into 64 KiB chunks
			must(t, f.s.AppendLiveLog(ctx, wr.ID, 0, int64(all.Len()), chunk))
			all.Write(chunk)
		}
		data, from, _, err := f.s.ReadLiveLog(ctx, wr.ID, 0, 0)
		must(t, err)
		if from == 0 || int64(len(data))+from != int64(all.Len()) {
			t.Fatalf("read %d bytes from %d of a %d-byte log: want its tail", len(data), from, all.Len())
		}
		if len(data) < store.MaxLiveLog || len(data) > store.MaxLiveLog+2<<20 {
			t.Fatalf("kept %d bytes, want about MaxLiveLog (%d)", len(data), store.MaxLiveLog)
		}
		if !bytes.Equal(data, all.Bytes()[from:]) {
			t.Fatal("the tail differs from what was appended")
		}
		var longest int
		must(t, f.s.DB().QueryRowContext(ctx, "SELECT max(length(data)) FROM live_log_chunks").Scan(&longest))
		if longest > store.MaxLiveLogChunk {
			t.Fatalf("a chunk of %d bytes, over MaxLiveLogChunk", longest)
		}
	})
}
