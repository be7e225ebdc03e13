package jobs_test

import (
	"testing"

	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/storetest"
)

func TestMemory(t *testing.T) {
	storetest.RunJobs(t, func(*testing.T) storetest.JobAndProgress { return jobs.NewMemory(nil) })
	storetest.RunLeases(t, func(*testing.T) jobs.LeaseStore { return jobs.NewMemory(nil) })
}

func TestRedis(t *testing.T) {
	fresh := storetest.Redis(t)
	storetest.RunJobs(t, func(t *testing.T) storetest.JobAndProgress { return jobs.NewRedis(fresh(t)) })
	storetest.RunLeases(t, func(t *testing.T) jobs.LeaseStore { return jobs.NewRedis(fresh(t)) })
}
