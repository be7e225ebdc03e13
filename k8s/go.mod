module github.com/shoalproject/shoal/k8s

go 1.26.8

replace github.com/shoalproject/shoal => ..

replace github.com/anacrolix/go-utp => ../third_party/go-utp

require (
	github.com/google/go-containerregistry v0.22.1
	github.com/shoalproject/shoal v0.0.0-00010101000000-000000000000
	golang.org/x/sys v0.50.0
)

require (
	github.com/docker/cli v29.7.2+incompatible // indirect
	github.com/docker/docker-credential-helpers v0.9.5 // indirect
	github.com/klauspost/compress v1.20.1 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sync v0.23.0 // indirect
)
