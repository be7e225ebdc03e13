// Package mediatype names the manifest media types preheat resolves and
// that a push notification must carry to start a preheat.
package mediatype

const (
	OCIIndex    = "application/vnd.oci.image.index.v1+json"
	OCIManifest = "application/vnd.oci.image.manifest.v1+json"
	DockerList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	DockerV2    = "application/vnd.docker.distribution.manifest.v2+json"
)

// Manifest reports whether mt is one of them.
func Manifest(mt string) bool {
	switch mt {
	case OCIManifest, OCIIndex, DockerV2, DockerList:
		return true
	}
	return false
}
