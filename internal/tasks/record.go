package tasks

import (
	"encoding/json"
	"os"
	"strconv"
	"syscall"
)

// record is what a running task leaves in its runner's work directory so
// that, should the runner and its guard both die at once, the next runner
// can find and kill the task's processes: their process group (told apart
// from a later group of the same number by its leader's start time), its
// cgroup, and its working directory (the marker in their environment).
type record struct {
	PGID   int    `json:"pgid"`
	Start  uint64 `json:"start"`
	Cgroup string `json:"cgroup,omitempty"`
	Dir    string `json:"dir"`
}

func writeRecord(path string, r record) error {
	b, _ := json.Marshal(r)
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// KillRecorded kills what the task recorded at path left running, and
// removes the record: the processes of its cgroup, those of its process
// group that started no earlier than the task, and those carrying its
// marker (KillStrays). It returns how many it killed. The runner calls it
// at start-up for every record a crashed predecessor left.
func KillRecorded(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var r record
	killed := 0
	if json.Unmarshal(b, &r) == nil {
		if r.Cgroup != "" {
			killed += (&Cgroup{path: r.Cgroup}).Remove()
		}
		if r.PGID > 1 {
			killed += killGroup(r.PGID, r.Start)
		}
		if r.Dir != "" {
			killed += KillStrays(r.Dir)
		}
	}
	os.Remove(path)
	return killed
}

// killGroup kills the members of process group pgid that started at or
// after start: a group number is reused only once the old group is empty,
// and a new group's processes started after the recorded leader.
func killGroup(pgid int, start uint64) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	killed := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if st, ok := readStat(pid); ok && st.pgid == pgid && st.start >= start && st.state != "Z" {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
	}
	return killed
}
