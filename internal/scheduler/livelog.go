package scheduler

import "sync"

// MaxLiveLog is how much of a running request's log a server keeps in
// memory for `kiln work logs` while it runs. Beyond it the oldest part is
// dropped; the complete log is uploaded as an artifact when the task ends.
const MaxLiveLog = 8 << 20

// liveLogs holds the logs of requests running on runners connected to
// this process. Logs of requests running on another replica are not here:
// they become readable once uploaded, at the end of the task.
type liveLogs struct {
	mu   sync.Mutex
	logs map[int64]*liveLog
}

type liveLog struct {
	start int64 // offset of buf[0] in the whole log
	buf   []byte
}

func newLiveLogs() *liveLogs { return &liveLogs{logs: map[int64]*liveLog{}} }

// append adds a chunk at offset; chunks already seen (a runner resending
// after a reconnection) and gaps (chunks lost while disconnected) are
// handled by position. It returns how many bytes were dropped to stay
// under MaxLiveLog.
func (l *liveLogs) append(id, offset int64, data []byte) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	lg := l.logs[id]
	if lg == nil {
		lg = &liveLog{start: offset}
		l.logs[id] = lg
	}
	end := lg.start + int64(len(lg.buf))
	switch {
	case offset+int64(len(data)) <= end:
		return 0 // already have it
	case offset < end:
		data = data[end-offset:]
	case offset > end:
		// a gap: bytes lost while the runner was disconnected; start over
		// at the new position rather than pretend the log is contiguous
		lg.start, lg.buf = offset, nil
	}
	lg.buf = append(lg.buf, data...)
	if over := len(lg.buf) - MaxLiveLog; over > 0 {
		lg.buf = append([]byte(nil), lg.buf[over:]...)
		lg.start += int64(over)
		return over
	}
	return 0
}

// read returns the log from offset on (or from the oldest byte kept), the
// offset of what it returns, and whether a live log exists.
func (l *liveLogs) read(id, offset int64) ([]byte, int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lg := l.logs[id]
	if lg == nil {
		return nil, 0, false
	}
	if offset < lg.start {
		offset = lg.start
	}
	i := offset - lg.start
	if i > int64(len(lg.buf)) {
		i = int64(len(lg.buf))
	}
	return append([]byte(nil), lg.buf[i:]...), lg.start + i, true
}

func (l *liveLogs) drop(id int64) {
	l.mu.Lock()
	delete(l.logs, id)
	l.mu.Unlock()
}
