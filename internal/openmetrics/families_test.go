package openmetrics

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/kiln-build/kiln/internal/store"
)

// snapshot builds a hand-made snapshot: scopes 1 debian, 2 kali; pool 7
// cloud; taken at farmNow.
func snapshot(totals ...store.Total) *store.Snapshot {
	return &store.Snapshot{
		Taken:       farmNow,
		Totals:      totals,
		ScopeNames:  map[int64]string{1: "debian", 2: "kali"},
		PoolNames:   map[int64]string{7: "cloud"},
		PoolRuntime: map[int64]float64{},
	}
}

// tot is a running total; kv alternates label names and values.
func tot(family string, value int64, kv ...string) store.Total {
	l := store.Labels{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return store.Total{Family: family, Labels: l, Value: value}
}

// samples encodes one family in the text format and returns its sample
// lines (no HELP/TYPE), or "" when the family has no series.
func samples(t *testing.T, name string, snap *store.Snapshot) (string, error) {
	t.Helper()
	mf, err := runFamily(name, families[name], newBuild(snap, newSeriesCache()))
	if err != nil {
		return "", err
	}
	if len(mf.Metric) == 0 {
		return "", nil
	}
	var b bytes.Buffer
	if err := expfmt.NewEncoder(&b, expfmt.FmtText).Encode(mf); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n"), nil
}

func at(d time.Duration) *time.Time { t := farmNow.Add(-d); return &t }

func maxSize(n int64) *int64 { return &n }

// TestFamilies is a table of each family's semantics on hand-made
// snapshots, including the point docs/architecture.md#reference-mistakes lists as mistakes of the
// reference implementation.
func TestFamilies(t *testing.T) {
	tests := []struct {
		name    string
		family  string
		snap    *store.Snapshot
		want    string
		wantErr string
	}{
		{
			name: "artifacts by category and scope name", family: "artifacts",
			snap: snapshot(tot("artifacts", 3, "category", "debian:upload", "scope_id", "1"), tot("artifacts", 1, "category", "debian:upload", "scope_id", "2")),
			want: `artifacts{category="debian:upload",scope="debian"} 3
artifacts{category="debian:upload",scope="kali"} 1`,
		},
		{
			name: "labels outside the public list never leak; rows merge", family: "artifacts",
			snap: snapshot(tot("artifacts", 2, "category", "x", "scope_id", "1", "workspace", "secret-a"),
				tot("artifacts", 3, "category", "x", "scope_id", "1", "workspace", "secret-b")),
			want: `artifacts{category="x",scope="debian"} 5`,
		},
		{
			name: "a vanished label set reports 0", family: "assets",
			snap: snapshot(tot("assets", 0, "category", "debusine:signing-key", "scope_id", "1")),
			want: `assets{category="debusine:signing-key",scope="debian"} 0`,
		},
		{
			name: "zero rows of a deleted scope are dropped", family: "collections",
			snap: snapshot(tot("collections", 0, "category", "debian:suite", "scope_id", "99"), tot("collections", 1, "category", "debian:suite", "scope_id", "2")),
			want: `collections{category="debian:suite",scope="kali"} 1`,
		},
		{
			name: "non-zero rows of an unknown scope fail the family", family: "collections",
			snap:    snapshot(tot("collections", 4, "category", "debian:suite", "scope_id", "99")),
			wantErr: "no scope with id 99",
		},
		{
			name: "file_store_size for every store", family: "file_store_size",
			snap: func() *store.Snapshot {
				s := snapshot()
				s.FileStores = []store.FileStoreSize{{Name: "default", Backend: "Local", TotalSize: 10}, {Name: "s3", Backend: "S3", TotalSize: 20, MaxSize: maxSize(100)}}
				return s
			}(),
			want: `file_store_size{backend="Local",name="default"} 10
file_store_size{backend="S3",name="s3"} 20`,
		},
		{
			name: "file_store_max_size only for stores with a maximum", family: "file_store_max_size",
			snap: func() *store.Snapshot {
				s := snapshot()
				s.FileStores = []store.FileStoreSize{{Name: "default", Backend: "Local", TotalSize: 10}, {Name: "s3", Backend: "S3", TotalSize: 20, MaxSize: maxSize(100)}}
				return s
			}(),
			want: `file_store_max_size{backend="S3",name="s3"} 100`,
		},
		{
			name: "file_store_max_size absent when no store has a maximum", family: "file_store_max_size",
			snap: func() *store.Snapshot {
				s := snapshot()
				s.FileStores = []store.FileStoreSize{{Name: "default", Backend: "Local"}}
				return s
			}(),
			want: "",
		},
		{
			name: "groups carry ephemeral and scope", family: "groups",
			snap: snapshot(tot("groups", 2, "ephemeral", "0", "scope_id", "1"), tot("groups", 1, "ephemeral", "1", "scope_id", "2")),
			want: `groups{ephemeral="0",scope="debian"} 2
groups{ephemeral="1",scope="kali"} 1`,
		},
		{
			name: "tokens by enabled, user and worker", family: "tokens",
			snap: snapshot(tot("tokens", 2, "enabled", "1", "user", "1", "worker", "0"), tot("tokens", 1, "enabled", "0", "user", "0", "worker", "1")),
			want: `tokens{enabled="0",user="0",worker="1"} 1
tokens{enabled="1",user="1",worker="0"} 2`,
		},
		{
			name: "users by active", family: "users",
			snap: snapshot(tot("users", 4, "active", "1"), tot("users", 1, "active", "0")),
			want: `users{active="0"} 1
users{active="1"} 4`,
		},
		{
			name: "user_identities by active and issuer", family: "user_identities",
			snap: snapshot(tot("user_identities", 2, "active", "1", "issuer", "salsa.debian.org"), tot("user_identities", 1, "active", "0", "issuer", "salsa.debian.org")),
			want: `user_identities{active="0",issuer="salsa.debian.org"} 1
user_identities{active="1",issuer="salsa.debian.org"} 2`,
		},
		{
			name: "work_requests: host_architecture and backend only for Worker tasks", family: "work_requests",
			snap: snapshot(
				tot("work_requests", 2, "task_type", "Worker", "task_name", "sbuild", "scope_id", "1", "status", "pending", "host_architecture", "amd64", "backend", "unshare"),
				tot("work_requests", 1, "task_type", "Workflow", "task_name", "sbuild", "scope_id", "1", "status", "running", "host_architecture", "amd64", "backend", "unshare")),
			want: `work_requests{backend="unshare",host_architecture="amd64",scope="debian",status="pending",task_name="sbuild",task_type="Worker"} 2
work_requests{scope="debian",status="running",task_name="sbuild",task_type="Workflow"} 1`,
		},
		{
			name: "workers: architecture labels only on external workers, pool only on pool workers, no cartesian fill", family: "workers",
			snap: snapshot(
				tot("workers", 1, "connected", "1", "busy", "1", "worker_type", "external", "architectures", "amd64,i386", "host_architecture", "amd64"),
				tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "hurd-i386", "host_architecture", "hurd-i386", "worker_pool_id", "7"),
				tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "server"),
				tot("workers", 0, "connected", "0", "busy", "0", "worker_type", "external", "architectures", "s390x", "host_architecture", "s390x")),
			want: `workers{architecture_amd64="0",architecture_hurd_i386="0",architecture_i386="0",architecture_s390x="1",busy="0",connected="0",host_architecture="s390x",worker_type="external"} 0
workers{architecture_amd64="0",architecture_hurd_i386="1",architecture_i386="0",architecture_s390x="0",busy="0",connected="1",host_architecture="hurd-i386",worker_pool="cloud",worker_type="external"} 1
workers{architecture_amd64="1",architecture_hurd_i386="0",architecture_i386="1",architecture_s390x="0",busy="1",connected="1",host_architecture="amd64",worker_type="external"} 1
workers{busy="0",connected="1",worker_type="server"} 1`,
		},
		{
			name: "workers: colliding architecture names share one label and merge", family: "workers",
			snap: snapshot(
				tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "arm-64", "host_architecture", "arm64"),
				tot("workers", 2, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "ARM_64", "host_architecture", "arm64")),
			want: `workers{architecture_arm_64="1",busy="0",connected="1",host_architecture="arm64",worker_type="external"} 3`,
		},
		{
			name: "workers: an external worker without architectures", family: "workers",
			snap: snapshot(tot("workers", 1, "connected", "0", "busy", "0", "worker_type", "external", "architectures", "", "host_architecture", "")),
			want: `workers{busy="0",connected="0",host_architecture="",worker_type="external"} 1`,
		},
		{
			name: "external_workers_by_architecture: once per supported architecture, names as values, no other worker type", family: "external_workers_by_architecture",
			snap: snapshot(
				tot("workers", 2, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "amd64,hurd-i386", "host_architecture", "amd64"),
				tot("workers", 1, "connected", "1", "busy", "1", "worker_type", "external", "architectures", "amd64", "host_architecture", "amd64", "worker_pool_id", "7"),
				tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "amd64", "host_architecture", "amd64", "worker_pool_id", "7"),
				tot("workers", 0, "connected", "0", "busy", "0", "worker_type", "external", "architectures", "s390x", "host_architecture", "s390x"),
				tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "", "host_architecture", ""),
				tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "server"),
			),
			want: `external_workers_by_architecture{architecture="amd64",busy="0",connected="1"} 3
external_workers_by_architecture{architecture="amd64",busy="1",connected="1"} 1
external_workers_by_architecture{architecture="hurd-i386",busy="0",connected="1"} 2
external_workers_by_architecture{architecture="s390x",busy="0",connected="0"} 0`,
		},
		{
			name: "worker_pool_runtime by pool name", family: "worker_pool_runtime",
			snap: func() *store.Snapshot { s := snapshot(); s.PoolRuntime[7] = 5400.5; return s }(),
			want: `worker_pool_runtime{worker_pool="cloud"} 5400.5`,
		},
		{
			name: "worker_pool_runtime of an unknown pool fails", family: "worker_pool_runtime",
			snap:    func() *store.Snapshot { s := snapshot(); s.PoolRuntime[8] = 1; return s }(),
			wantErr: "unknown worker pool 8",
		},
		{
			name: "workflow_templates by task_name and scope", family: "workflow_templates",
			snap: snapshot(tot("workflow_templates", 1, "task_name", "sbuild", "scope_id", "2")),
			want: `workflow_templates{scope="kali",task_name="sbuild"} 1`,
		},
		{
			name: "workspaces carry private, expires and scope", family: "workspaces",
			snap: snapshot(tot("workspaces", 2, "private", "1", "expires", "0", "scope_id", "1"), tot("workspaces", 1, "private", "0", "expires", "1", "scope_id", "1")),
			want: `workspaces{expires="0",private="1",scope="debian"} 2
workspaces{expires="1",private="0",scope="debian"} 1`,
		},
		{
			name: "artifact_file_size has the label sets of artifacts, 0 without files", family: "artifact_file_size",
			snap: snapshot(tot("artifacts", 1, "category", "a", "scope_id", "1"), tot("artifacts", 2, "category", "b", "scope_id", "1"),
				tot("artifact_file_size", 1234, "category", "b", "scope_id", "1")),
			want: `artifact_file_size{category="a",scope="debian"} 0
artifact_file_size{category="b",scope="debian"} 1234`,
		},
		{
			name: "user_activity: one observation per (user, scope), in days", family: "user_activity",
			snap: func() *store.Snapshot {
				s := snapshot()
				s.Activity = []store.Activity{
					{ScopeID: 1, LastWorkflowAt: *at(day)},        // exactly on a bound
					{ScopeID: 1, LastWorkflowAt: *at(400 * day)},  // past the last bound
					{ScopeID: 1, LastWorkflowAt: *at(-time.Hour)}, // clock skew: counts as 0
					{ScopeID: 99, LastWorkflowAt: *at(day)},       // deleted scope
				}
				return s
			}(),
			want: `user_activity_bucket{scope="debian",le="1"} 2
user_activity_bucket{scope="debian",le="3"} 2
user_activity_bucket{scope="debian",le="7"} 2
user_activity_bucket{scope="debian",le="14"} 2
user_activity_bucket{scope="debian",le="30"} 2
user_activity_bucket{scope="debian",le="90"} 2
user_activity_bucket{scope="debian",le="365"} 2
user_activity_bucket{scope="debian",le="+Inf"} 3
user_activity_sum{scope="debian"} 401
user_activity_count{scope="debian"} 3`,
		},
		{
			name: "user_identities_activity: per issuer, nothing without identities, never an empty issuer", family: "user_identities_activity",
			snap: func() *store.Snapshot {
				s := snapshot()
				s.Activity = []store.Activity{
					{ScopeID: 2, LastWorkflowAt: *at(2 * day), Issuers: []string{"a.example", "b.example", "a.example", ""}},
					{ScopeID: 2, LastWorkflowAt: *at(3 * day)}, // no identity
				}
				return s
			}(),
			want: `user_identities_activity_bucket{issuer="a.example",scope="kali",le="1"} 0
user_identities_activity_bucket{issuer="a.example",scope="kali",le="3"} 1
user_identities_activity_bucket{issuer="a.example",scope="kali",le="7"} 1
user_identities_activity_bucket{issuer="a.example",scope="kali",le="14"} 1
user_identities_activity_bucket{issuer="a.example",scope="kali",le="30"} 1
user_identities_activity_bucket{issuer="a.example",scope="kali",le="90"} 1
user_identities_activity_bucket{issuer="a.example",scope="kali",le="365"} 1
user_identities_activity_bucket{issuer="a.example",scope="kali",le="+Inf"} 1
user_identities_activity_sum{issuer="a.example",scope="kali"} 2
user_identities_activity_count{issuer="a.example",scope="kali"} 1
user_identities_activity_bucket{issuer="b.example",scope="kali",le="1"} 0
user_identities_activity_bucket{issuer="b.example",scope="kali",le="3"} 1
user_identities_activity_bucket{issuer="b.example",scope="kali",le="7"} 1
user_identities_activity_bucket{issuer="b.example",scope="kali",le="14"} 1
user_identities_activity_bucket{issuer="b.example",scope="kali",le="30"} 1
user_identities_activity_bucket{issuer="b.example",scope="kali",le="90"} 1
user_identities_activity_bucket{issuer="b.example",scope="kali",le="365"} 1
user_identities_activity_bucket{issuer="b.example",scope="kali",le="+Inf"} 1
user_identities_activity_sum{issuer="b.example",scope="kali"} 2
user_identities_activity_count{issuer="b.example",scope="kali"} 1`,
		},
		{
			name: "user_identities_activity: no series when nobody has an identity", family: "user_identities_activity",
			snap: func() *store.Snapshot {
				s := snapshot()
				s.Activity = []store.Activity{{ScopeID: 1, LastWorkflowAt: *at(day)}}
				return s
			}(),
			want: "",
		},
		{
			name: "task_execution_times: microseconds become seconds, stored buckets become cumulative", family: "task_execution_times",
			snap: snapshot(
				tot("task_execution_times", 2, "task_type", "Worker", "task_name", "sbuild", "scope_id", "1", "le", "60000000"),
				tot("task_execution_times", 1, "task_type", "Worker", "task_name", "sbuild", "scope_id", "1", "le", "2000000"), // an old bound: counted at 10 s
				tot("task_execution_times", 1, "task_type", "Worker", "task_name", "sbuild", "scope_id", "1", "le", "+Inf"),
				tot("task_execution_times_sum", 100000000000, "task_type", "Worker", "task_name", "sbuild", "scope_id", "1")),
			want: `task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="1"} 0
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="10"} 1
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="30"} 1
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="60"} 3
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="300"} 3
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="900"} 3
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="1800"} 3
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="3600"} 3
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="10800"} 3
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="21600"} 3
task_execution_times_bucket{scope="debian",task_name="sbuild",task_type="Worker",le="+Inf"} 4
task_execution_times_sum{scope="debian",task_name="sbuild",task_type="Worker"} 100000
task_execution_times_count{scope="debian",task_name="sbuild",task_type="Worker"} 4`,
		},
		{
			name: "a negative bucket count fails the family", family: "collection_sizes",
			snap:    snapshot(tot("collection_sizes", -1, "category", "c", "scope_id", "1", "le", "10")),
			wantErr: "negative count",
		},
		{
			name: "a malformed bucket bound fails the family", family: "artifact_file_counts",
			snap:    snapshot(tot("artifact_file_counts", 1, "category", "c", "scope_id", "1", "le", "ten")),
			wantErr: "not an integer",
		},
		{
			name: "collection_sizes with the store's bounds, 0 included", family: "collection_sizes",
			snap: snapshot(tot("collection_sizes", 1, "category", "c", "scope_id", "1", "le", "0"), tot("collection_sizes", 1, "category", "c", "scope_id", "1", "le", "100"),
				tot("collection_sizes_sum", 42, "category", "c", "scope_id", "1")),
			want: `collection_sizes_bucket{category="c",scope="debian",le="0"} 1
collection_sizes_bucket{category="c",scope="debian",le="1"} 1
collection_sizes_bucket{category="c",scope="debian",le="10"} 1
collection_sizes_bucket{category="c",scope="debian",le="100"} 2
collection_sizes_bucket{category="c",scope="debian",le="1000"} 2
collection_sizes_bucket{category="c",scope="debian",le="10000"} 2
collection_sizes_bucket{category="c",scope="debian",le="100000"} 2
collection_sizes_bucket{category="c",scope="debian",le="+Inf"} 2
collection_sizes_sum{category="c",scope="debian"} 42
collection_sizes_count{category="c",scope="debian"} 2`,
		},
		{
			name: "artifact_file_sizes in bytes", family: "artifact_file_sizes",
			snap: snapshot(tot("artifact_file_sizes", 1, "category", "c", "scope_id", "2", "le", "1024"), tot("artifact_file_sizes_sum", 1000, "category", "c", "scope_id", "2")),
			want: `artifact_file_sizes_bucket{category="c",scope="kali",le="1024"} 1
artifact_file_sizes_bucket{category="c",scope="kali",le="16384"} 1
artifact_file_sizes_bucket{category="c",scope="kali",le="262144"} 1
artifact_file_sizes_bucket{category="c",scope="kali",le="1.048576e+06"} 1
artifact_file_sizes_bucket{category="c",scope="kali",le="1.6777216e+07"} 1
artifact_file_sizes_bucket{category="c",scope="kali",le="2.68435456e+08"} 1
artifact_file_sizes_bucket{category="c",scope="kali",le="1.073741824e+09"} 1
artifact_file_sizes_bucket{category="c",scope="kali",le="4.294967296e+09"} 1
artifact_file_sizes_bucket{category="c",scope="kali",le="+Inf"} 1
artifact_file_sizes_sum{category="c",scope="kali"} 1000
artifact_file_sizes_count{category="c",scope="kali"} 1`,
		},
		{
			name: "artifact_file_counts: a vanished label set keeps its zero histogram", family: "artifact_file_counts",
			snap: snapshot(tot("artifact_file_counts", 0, "category", "c", "scope_id", "1", "le", "1"), tot("artifact_file_counts_sum", 0, "category", "c", "scope_id", "1")),
			want: `artifact_file_counts_bucket{category="c",scope="debian",le="0"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="1"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="2"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="5"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="10"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="20"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="50"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="100"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="1000"} 0
artifact_file_counts_bucket{category="c",scope="debian",le="+Inf"} 0
artifact_file_counts_sum{category="c",scope="debian"} 0
artifact_file_counts_count{category="c",scope="debian"} 0`,
		},
		{
			// the store counts them (store.TestTokenAges): one used 30 s
			// ago, one 2 h ago
			name: "tokens_last_seen: the store's counts, cumulated", family: "tokens_last_seen",
			snap: func() *store.Snapshot {
				s := snapshot()
				s.TokenLastSeen = store.AgeHistogram{Counts: []int64{1, 0, 1, 0, 0, 0, 0, 0}, Sum: 7230}
				return s
			}(),
			want: `tokens_last_seen_bucket{le="60"} 1
tokens_last_seen_bucket{le="3600"} 1
tokens_last_seen_bucket{le="86400"} 2
tokens_last_seen_bucket{le="604800"} 2
tokens_last_seen_bucket{le="2.592e+06"} 2
tokens_last_seen_bucket{le="7.776e+06"} 2
tokens_last_seen_bucket{le="3.1536e+07"} 2
tokens_last_seen_bucket{le="+Inf"} 2
tokens_last_seen_sum 7230
tokens_last_seen_count 2`,
		},
		{
			name: "tokens_last_seen: one empty series without tokens", family: "tokens_last_seen",
			snap: snapshot(),
			want: `tokens_last_seen_bucket{le="60"} 0
tokens_last_seen_bucket{le="3600"} 0
tokens_last_seen_bucket{le="86400"} 0
tokens_last_seen_bucket{le="604800"} 0
tokens_last_seen_bucket{le="2.592e+06"} 0
tokens_last_seen_bucket{le="7.776e+06"} 0
tokens_last_seen_bucket{le="3.1536e+07"} 0
tokens_last_seen_bucket{le="+Inf"} 0
tokens_last_seen_sum 0
tokens_last_seen_count 0`,
		},
		{
			name: "invalid UTF-8 in a label value is replaced, not passed on", family: "user_identities",
			snap: snapshot(tot("user_identities", 1, "active", "1", "issuer", "bad\xffissuer")),
			want: `user_identities{active="1",issuer="bad` + "\uFFFD" + `issuer"} 1`,
		},
	}
	covered := map[string]bool{}
	for _, tc := range tests {
		covered[tc.family] = true
		t.Run(tc.name, func(t *testing.T) {
			got, err := samples(t, tc.family, tc.snap)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
	for _, name := range familyNames() {
		if !covered[name] {
			t.Errorf("family %s has no table test", name)
		}
	}
}

func TestArchitectureLabel(t *testing.T) {
	for arch, want := range map[string]string{
		"amd64":          "architecture_amd64",
		"hurd-i386":      "architecture_hurd_i386",
		"kfreebsd-amd64": "architecture_kfreebsd_amd64",
		"AMD64":          "architecture_amd64",
		"arm.v7":         "architecture_arm_v7",
		"x86_64":         "architecture_x86_64",
		"ü":              "architecture__",
		"64":             "architecture_64",
	} {
		if got := ArchitectureLabel(arch); got != want {
			t.Errorf("ArchitectureLabel(%q) = %q, want %q", arch, got, want)
		}
	}
}

// TestNewArchitecture: the first worker of a new architecture renames
// every external-worker series of workers (a new architecture_<a> label,
// as docs/architecture.md#public-endpoint specifies) but only adds series to
// external_workers_by_architecture, whose other series keep their labels.
func TestNewArchitecture(t *testing.T) {
	before := []store.Total{
		tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "amd64", "host_architecture", "amd64"),
		tot("workers", 1, "connected", "1", "busy", "1", "worker_type", "external", "architectures", "amd64,i386", "host_architecture", "amd64"),
	}
	after := append(slices.Clone(before),
		tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "riscv64", "host_architecture", "riscv64"))
	series := func(family string, totals []store.Total) []string {
		out, err := samples(t, family, snapshot(totals...))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(out, "\n")
	}
	for _, s := range series("external_workers_by_architecture", before) {
		if !slices.Contains(series("external_workers_by_architecture", after), s) {
			t.Errorf("external_workers_by_architecture: %s changed with a new architecture", s)
		}
	}
	for _, s := range series("workers", before) {
		if slices.Contains(series("workers", after), s) {
			t.Errorf("workers: %s did not change; the test no longer shows what the companion family is for", s)
		}
	}
}
