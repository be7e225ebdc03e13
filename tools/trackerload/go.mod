module github.com/shoalproject/shoal/tools/trackerload

go 1.26.8

replace (
	github.com/anacrolix/go-utp => ../../third_party/go-utp
	github.com/shoalproject/shoal => ../..
)

require (
	github.com/shoalproject/shoal v0.0.0-00010101000000-000000000000
	github.com/sirupsen/logrus v1.10.2
)

require golang.org/x/sys v0.48.0 // indirect
