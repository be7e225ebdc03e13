package jobs

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata goldens from this code")

// goldenJob sets every field of a Job, each by name, so this test reads the
// same whatever blocks the fields are grouped in.
func goldenJob() *Job {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	j := &Job{}
	j.ID = 42
	j.State = StateFailure
	j.Error = "1 of 2 fetches failed"
	j.Image = "registry.test/lib/app:1"
	j.Registry = "https://registry.test"
	j.Repository = "lib/app"
	j.Reference = "1"
	j.Digest = "sha256:00"
	j.Platforms = []string{"linux/amd64"}
	j.Groups = []string{"zone-a", "zone-b"}
	j.Nodes = []string{"n1", "10.0.0.2"}
	j.Count = 2
	j.Percentage = 50
	j.EmptyGroups = []string{"zone-b"}
	j.ClusterIDs = []int{1, 2}
	j.Blobs = []Blob{{Digest: "sha256:aa", Size: 3, MediaType: "application/vnd.oci.image.layer.v1.tar+gzip"}}
	j.Targets = []Target{{NodeID: "n1", Address: "https://10.0.0.1:65003", Groups: []string{"zone-a"}}, {NodeID: "n2", Address: "https://10.0.0.2:65003", Offline: true}}
	j.Source = "dragonfly:single"
	j.NeedsCreds = true
	j.Owner = "replica-a"
	j.DedupeKey = "k"
	j.CreatedAt = at
	j.UpdatedAt = at.Add(time.Second)
	j.StartedAt = at.Add(2 * time.Second)
	j.FinishedAt = at.Add(3 * time.Second)
	return j
}

// The Job is the jobs API's wire record and what the Redis store keeps:
// its JSON must not change with its Go shape. The golden was written by
// the Job of 25 flat fields.
func TestJobJSONGolden(t *testing.T) {
	got, err := json.Marshal(goldenJob())
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/job.golden.json"
	if *updateGolden {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	want = bytes.TrimSuffix(want, []byte("\n"))
	if !bytes.Equal(got, want) {
		t.Fatalf("Job JSON changed:\ngot  %s\nwant %s", got, want)
	}
	// What was written reads back whole.
	var back Job
	if err := json.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(&back); !bytes.Equal(again, want) {
		t.Fatalf("Job JSON does not round-trip:\ngot  %s\nwant %s", again, want)
	}
	// The zero Job keeps its omissions (the Redis store splices the id
	// into a job marshalled with id 0 first).
	zero, _ := json.Marshal(&Job{})
	if string(zero) != `{"id":0,"state":"","image":"","registry":"","repository":"","reference":"","blobs":null,"createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z"}` {
		t.Fatalf("zero Job: %s", zero)
	}
}
