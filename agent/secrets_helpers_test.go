package agent

import "github.com/shoalproject/shoal/internal/secret"

// testTrackerSecret is shared by the trackers and registries these tests
// start: random, as both refuse guessable secrets.
var testTrackerSecret = secret.Generate()
