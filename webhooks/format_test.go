package webhooks

import (
	"fmt"
	"strings"
	"testing"
)

// TestFormatGitHubEdges covers what GitHub's examples do not: long pushes,
// deleted branches, merged pull requests, approvals, unsafe links.
func TestFormatGitHubEdges(t *testing.T) {
	var commits []string
	for i := 0; i < 12; i++ {
		commits = append(commits, fmt.Sprintf(`{"id":"%040d","message":"change %d\n\nbody","url":"https://github.com/o/r/commit/%d","author":{"name":"Ann"}}`, i, i, i))
	}
	repo := `"repository":{"full_name":"o/r","html_url":"https://github.com/o/r"},"sender":{"login":"ann"}`
	cases := []struct {
		name, event, payload string
		body, html           []string
		notHTML              []string
	}{
		{"long push", "push", `{"ref":"refs/heads/main","compare":"https://github.com/o/r/compare/a...b","pusher":{"name":"ann"},"commits":[` +
			strings.Join(commits, ",") + `],` + repo + `}`,
			[]string{"ann pushed 12 commits to branch main", "change 9 — Ann", "… and 2 more"},
			[]string{"<li>… and 2 more</li>", `<a href="https://github.com/o/r/compare/a...b">compare</a>`},
			[]string{"change 10", "body"}},
		{"forced push", "push", `{"ref":"refs/heads/dev","forced":true,"pusher":{"name":"ann"},"commits":[` + commits[0] + `],` + repo + `}`,
			[]string{"ann force-pushed 1 commit to branch dev"}, nil, nil},
		{"deleted branch", "push", `{"ref":"refs/heads/old","deleted":true,"pusher":{"name":"ann"},"commits":[],` + repo + `}`,
			[]string{"[o/r] ann deleted branch old"}, []string{"<b>old</b>"}, nil},
		{"merged", "pull_request", `{"action":"closed","pull_request":{"number":3,"title":"T","html_url":"https://github.com/o/r/pull/3","merged":true},` + repo + `}`,
			[]string{"ann merged pull request #3: T"}, nil, nil},
		{"closed unmerged", "pull_request", `{"action":"closed","pull_request":{"number":3,"title":"T","html_url":"https://github.com/o/r/pull/3"},` + repo + `}`,
			[]string{"ann closed pull request #3: T"}, nil, nil},
		{"approved", "pull_request_review", `{"action":"submitted","review":{"state":"approved","body":"LGTM","html_url":"https://github.com/o/r/pull/3#r"},"pull_request":{"number":3,"title":"T"},` + repo + `}`,
			[]string{"ann approved pull request #3: T", "> LGTM"}, nil, nil},
		{"changes requested", "pull_request_review", `{"action":"submitted","review":{"state":"changes_requested","html_url":"https://github.com/o/r/pull/3#r"},"pull_request":{"number":3,"title":"T"},` + repo + `}`,
			[]string{"ann requested changes on pull request #3: T"}, nil, nil},
		{"comment on a pull request", "issue_comment", `{"action":"created","issue":{"number":3,"title":"T","pull_request":{"url":"x"}},"comment":{"body":"hm","html_url":"https://github.com/o/r/pull/3#c"},` + repo + `}`,
			[]string{"ann commented on pull request #3: T"}, nil, nil},
		{"pre-release", "release", `{"action":"published","release":{"tag_name":"v2.0.0-rc1","name":"RC 1","prerelease":true,"html_url":"https://github.com/o/r/releases/tag/v2.0.0-rc1"},` + repo + `}`,
			[]string{"ann published pre-release v2.0.0-rc1 (RC 1)"}, nil, nil},
		{"unsafe link", "issues", `{"action":"opened","issue":{"number":1,"title":"x","html_url":"javascript:alert(1)"},` + repo + `}`,
			[]string{"ann opened issue #1: x"}, nil, []string{"javascript:"}},
		{"organisation event", "organization", `{"action":"member_added","organization":{"login":"octo-org"},"sender":{"login":"ann"}}`,
			[]string{"[octo-org] GitHub event organization (member_added) by ann"}, nil, nil},
	}
	for _, c := range cases {
		content, err := formatGitHub(c.event, []byte(c.payload))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		body, html := content["body"].(string), content["formatted_body"].(string)
		for _, w := range c.body {
			if !strings.Contains(body, w) {
				t.Errorf("%s: body %q lacks %q", c.name, body, w)
			}
		}
		for _, w := range c.html {
			if !strings.Contains(html, w) {
				t.Errorf("%s: html %q lacks %q", c.name, html, w)
			}
		}
		for _, w := range c.notHTML {
			if strings.Contains(html, w) {
				t.Errorf("%s: html %q has %q", c.name, html, w)
			}
		}
	}
	for _, ev := range []string{"issues", "issue_comment", "pull_request", "pull_request_review", "release", "workflow_run"} {
		if _, err := formatGitHub(ev, []byte(`{"action":"opened"}`)); err == nil {
			t.Errorf("%s without its object: no error", ev)
		}
	}
	if _, err := formatGitHub("push", []byte(`[1]`)); err == nil {
		t.Error("an array: no error")
	}
}
