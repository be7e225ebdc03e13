package image

import (
	"fmt"
	"regexp"
	"strings"
)

// The distribution spec's grammar for repository names, tags and digests
// (distribution/reference). Checked before the registry is asked, so a
// typo is answered with what is wrong rather than a registry 404 or 400.
var (
	repoComponent = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`
	repoRe        = regexp.MustCompile(`^` + repoComponent + `(?:/` + repoComponent + `)*$`)
	tagRe         = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRe      = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
)

// maxRepoLen is distribution's limit on a repository name.
const maxRepoLen = 255

// Check explains what is wrong with a reference parsed from image, or
// returns nil.
func Check(ref Ref, image string) error {
	switch {
	case !strings.HasPrefix(image, "http") && strings.Contains(image, "@") && !strings.Contains(ref.Reference, ":"):
		return fmt.Errorf("digest %q: want algorithm:hex, e.g. sha256:…", ref.Reference)
	case len(ref.Repository) > maxRepoLen:
		return fmt.Errorf("repository name longer than %d characters", maxRepoLen)
	case strings.ToLower(ref.Repository) != ref.Repository:
		return fmt.Errorf("repository %q: must be lowercase", ref.Repository)
	case !repoRe.MatchString(ref.Repository):
		return fmt.Errorf("repository %q: only lowercase letters, digits and separators (. _ __ -) between path components separated by /", ref.Repository)
	case strings.Contains(ref.Reference, ":"):
		if !digestRe.MatchString(ref.Reference) {
			return fmt.Errorf("digest %q: want algorithm:hex, e.g. sha256:…", ref.Reference)
		}
	case !tagRe.MatchString(ref.Reference):
		return fmt.Errorf("tag %q: 1–128 letters, digits, '_', '.' or '-', not starting with '.' or '-'", ref.Reference)
	}
	return nil
}
