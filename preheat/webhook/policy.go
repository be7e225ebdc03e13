package webhook

import (
	"fmt"
	"path"
	"regexp"
)

// Policy decides what a push (registry notification or Harbor webhook)
// preheats. All set fields must match; the first matching policy wins.
type Policy struct {
	Name string `yaml:"name"`
	// Repository is a path.Match glob, e.g. "library/*".
	Repository string `yaml:"repository"`
	// Tag is a glob; TagRegex a regular expression (anchored by the user).
	Tag       string   `yaml:"tag"`
	TagRegex  string   `yaml:"tagRegex"`
	Groups    []string `yaml:"groups"`
	Platforms []string `yaml:"platforms"`
}

// Policies are policies with their globs checked and regexps compiled,
// in the order they were configured.
type Policies []compiled

type compiled struct {
	Policy
	tagRe *regexp.Regexp
}

// Compile checks every policy's globs and compiles its regexp.
func Compile(ps []Policy) (Policies, error) {
	out := make(Policies, 0, len(ps))
	for i, p := range ps {
		if p.Repository == "" {
			return nil, fmt.Errorf("policy %d (%s): repository glob is required", i, p.Name)
		}
		if _, err := path.Match(p.Repository, ""); err != nil {
			return nil, fmt.Errorf("policy %s: repository %q: %w", p.Name, p.Repository, err)
		}
		if p.Tag != "" {
			if _, err := path.Match(p.Tag, ""); err != nil {
				return nil, fmt.Errorf("policy %s: tag %q: %w", p.Name, p.Tag, err)
			}
		}
		cp := compiled{Policy: p}
		if p.TagRegex != "" {
			re, err := regexp.Compile(p.TagRegex)
			if err != nil {
				return nil, fmt.Errorf("policy %s: tagRegex: %w", p.Name, err)
			}
			cp.tagRe = re
		}
		out = append(out, cp)
	}
	return out, nil
}

// Match is the first policy that applies to a push of repo:tag ("" when
// pushed by digest); it is a Match.
func (ps Policies) Match(repo, tag string) (Target, bool) {
	for i := range ps {
		if ps[i].match(repo, tag) {
			return Target{Groups: ps[i].Groups, Platforms: ps[i].Platforms}, true
		}
	}
	return Target{}, false
}

func (p *compiled) match(repo, tag string) bool {
	if ok, _ := path.Match(p.Repository, repo); !ok {
		return false
	}
	if p.Tag != "" {
		if ok, _ := path.Match(p.Tag, tag); !ok {
			return false
		}
	}
	if p.tagRe != nil && !p.tagRe.MatchString(tag) {
		return false
	}
	return true
}
