package tasks

import "testing"

func TestContainsEnv(t *testing.T) {
	marker := []byte(TaskDirEnv + "=/w/tasks/1\x00")
	for _, c := range []struct {
		block string
		want  bool
	}{
		{"PATH=/bin\x00KILN_TASK_DIR=/w/tasks/1\x00HOME=/", true},
		{"KILN_TASK_DIR=/w/tasks/1", true},
		{"KILN_TASK_DIR=/w/tasks/1\x00", true},
		{"KILN_TASK_DIR=/w/tasks/12\x00", false},
		{"XKILN_TASK_DIR=/w/tasks/1\x00", false},
		{"KILN_TASK_DIR=/w/tasks/\x00", false},
		{"", false},
	} {
		if got := containsEnv([]byte(c.block), marker); got != c.want {
			t.Errorf("containsEnv(%q) = %v, want %v", c.block, got, c.want)
		}
	}
}
