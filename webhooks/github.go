package webhooks

import (
	"encoding/json"
	"fmt"
	"html"
	"strings"
	"unicode/utf8"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// GitHub's webhook payloads, the fields the notices use.
// https://docs.github.com/en/webhooks/webhook-events-and-payloads
type ghUser struct {
	Login   string `json:"login"`
	HTMLURL string `json:"html_url"`
}

type ghPayload struct {
	Action       string  `json:"action"`
	Repository   *ghRepo `json:"repository"`
	Sender       *ghUser `json:"sender"`
	Organization *ghUser `json:"organization"`

	// ping
	Zen string `json:"zen"`
	// push
	Ref     string `json:"ref"`
	Compare string `json:"compare"`
	Created bool   `json:"created"`
	Deleted bool   `json:"deleted"`
	Forced  bool   `json:"forced"`
	Pusher  struct {
		Name string `json:"name"`
	} `json:"pusher"`
	Commits []struct {
		ID      string `json:"id"`
		Message string `json:"message"`
		URL     string `json:"url"`
		Author  struct {
			Name     string `json:"name"`
			Username string `json:"username"`
		} `json:"author"`
	} `json:"commits"`
	// issues, issue_comment, pull_request, pull_request_review
	Issue *struct {
		Number      int             `json:"number"`
		Title       string          `json:"title"`
		HTMLURL     string          `json:"html_url"`
		PullRequest json.RawMessage `json:"pull_request"`
	} `json:"issue"`
	Comment *struct {
		Body    string `json:"body"`
		HTMLURL string `json:"html_url"`
	} `json:"comment"`
	PullRequest *struct {
		Number  int    `json:"number"`
		Title   string `json:"title"`
		HTMLURL string `json:"html_url"`
		Merged  bool   `json:"merged"`
		Head    struct {
			Ref string `json:"ref"`
		} `json:"head"`
		Base struct {
			Ref string `json:"ref"`
		} `json:"base"`
	} `json:"pull_request"`
	Review *struct {
		State   string `json:"state"`
		Body    string `json:"body"`
		HTMLURL string `json:"html_url"`
	} `json:"review"`
	// release
	Release *struct {
		TagName    string `json:"tag_name"`
		Name       string `json:"name"`
		HTMLURL    string `json:"html_url"`
		Prerelease bool   `json:"prerelease"`
	} `json:"release"`
	// workflow_run
	WorkflowRun *struct {
		Name         string `json:"name"`
		DisplayTitle string `json:"display_title"`
		HTMLURL      string `json:"html_url"`
		Conclusion   string `json:"conclusion"`
		HeadBranch   string `json:"head_branch"`
		RunNumber    int    `json:"run_number"`
	} `json:"workflow_run"`
	Workflow *struct {
		Name string `json:"name"`
	} `json:"workflow"`
}

type ghRepo struct {
	FullName        string `json:"full_name"`
	HTMLURL         string `json:"html_url"`
	StargazersCount int    `json:"stargazers_count"`
}

// maxCommits is how many commits of a push are listed.
const maxCommits = 10

// msg builds a notice's plain and HTML bodies side by side.
type msg struct{ text, html strings.Builder }

// add appends s to both bodies, escaped in the HTML.
func (m *msg) add(s string) *msg {
	m.text.WriteString(s)
	m.html.WriteString(escape(s))
	return m
}

// link appends s, linked to url in the HTML (and followed by the URL in
// the plain body when withURL).
func (m *msg) link(s, url string, withURL bool) *msg {
	m.text.WriteString(s)
	if withURL && url != "" {
		m.text.WriteString(" (" + url + ")")
	}
	if safeURL(url) {
		m.html.WriteString(`<a href="` + escape(url) + `">` + escape(s) + `</a>`)
	} else {
		m.html.WriteString(escape(s))
	}
	return m
}

// bold appends s, in bold in the HTML.
func (m *msg) bold(s string) *msg {
	m.text.WriteString(s)
	m.html.WriteString("<b>" + escape(s) + "</b>")
	return m
}

// quote appends a short excerpt of s on its own line.
func (m *msg) quote(s string) *msg {
	s = strings.TrimSpace(s)
	if s == "" {
		return m
	}
	s = truncate(s, 300)
	m.text.WriteString("\n> " + strings.ReplaceAll(s, "\n", "\n> "))
	m.html.WriteString("<blockquote>" + strings.ReplaceAll(escape(s), "\n", "<br>") + "</blockquote>")
	return m
}

func (m *msg) content() map[string]any { return notice(m.text.String(), m.html.String()) }

func escape(s string) string   { return html.EscapeString(s) }
func unescape(s string) string { return html.UnescapeString(s) }

func safeURL(u string) bool {
	return strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://")
}

// truncate cuts s to at most n runes, with an ellipsis.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// formatGitHub turns a GitHub event into a notice's content; nil when the
// event posts nothing (a workflow run that did not fail).
func formatGitHub(event string, body []byte) (map[string]any, error) {
	var p ghPayload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, mxerr.BadJSON("Not a GitHub webhook payload: %v", err)
	}
	m := &msg{}
	if p.Repository != nil && p.Repository.FullName != "" {
		m.add("[").link(p.Repository.FullName, p.Repository.HTMLURL, false).add("] ")
	} else if p.Organization != nil && p.Organization.Login != "" {
		m.add("[" + p.Organization.Login + "] ")
	}
	sender := ""
	if p.Sender != nil {
		sender = p.Sender.Login
	}
	switch event {
	case "ping":
		m.add("Webhook connected")
		if sender != "" {
			m.add(" by ").bold(sender)
		}
		if p.Zen != "" {
			m.add(": “" + p.Zen + "”")
		}
	case "push":
		formatPush(m, &p)
	case "issues":
		if p.Issue == nil {
			return nil, mxerr.BadJSON("issues event without issue")
		}
		m.bold(sender).add(" "+strings.ReplaceAll(p.Action, "_", " ")+" issue ").
			link(fmt.Sprintf("#%d: %s", p.Issue.Number, p.Issue.Title), p.Issue.HTMLURL, true)
	case "issue_comment":
		if p.Issue == nil || p.Comment == nil {
			return nil, mxerr.BadJSON("issue_comment event without issue or comment")
		}
		kind := "issue"
		if len(p.Issue.PullRequest) > 0 && string(p.Issue.PullRequest) != "null" {
			kind = "pull request"
		}
		verb := map[string]string{"created": "commented on", "edited": "edited a comment on",
			"deleted": "deleted a comment on"}[p.Action]
		if verb == "" {
			verb = p.Action + " a comment on"
		}
		m.bold(sender).add(" "+verb+" "+kind+" ").
			link(fmt.Sprintf("#%d: %s", p.Issue.Number, p.Issue.Title), p.Comment.HTMLURL, true)
		if p.Action != "deleted" {
			m.quote(p.Comment.Body)
		}
	case "pull_request":
		if p.PullRequest == nil {
			return nil, mxerr.BadJSON("pull_request event without pull_request")
		}
		action := strings.ReplaceAll(p.Action, "_", " ")
		if p.Action == "closed" && p.PullRequest.Merged {
			action = "merged"
		}
		m.bold(sender).add(" "+action+" pull request ").
			link(fmt.Sprintf("#%d: %s", p.PullRequest.Number, p.PullRequest.Title), p.PullRequest.HTMLURL, true)
		if p.Action == "opened" || p.Action == "reopened" {
			m.add(" (" + p.PullRequest.Head.Ref + " → " + p.PullRequest.Base.Ref + ")")
		}
	case "pull_request_review":
		if p.PullRequest == nil || p.Review == nil {
			return nil, mxerr.BadJSON("pull_request_review event without pull_request or review")
		}
		verb := map[string]string{"approved": "approved", "changes_requested": "requested changes on",
			"commented": "reviewed", "dismissed": "dismissed a review on"}[strings.ToLower(p.Review.State)]
		if p.Action == "dismissed" {
			verb = "dismissed a review on"
		} else if p.Action == "edited" {
			verb = "edited a review on"
		}
		if verb == "" {
			verb = "reviewed"
		}
		m.bold(sender).add(" "+verb+" pull request ").
			link(fmt.Sprintf("#%d: %s", p.PullRequest.Number, p.PullRequest.Title), p.Review.HTMLURL, true)
		if p.Action == "submitted" {
			m.quote(p.Review.Body)
		}
	case "release":
		if p.Release == nil {
			return nil, mxerr.BadJSON("release event without release")
		}
		what := "release"
		if p.Release.Prerelease {
			what = "pre-release"
		}
		name := p.Release.TagName
		if p.Release.Name != "" && p.Release.Name != p.Release.TagName {
			name += " (" + p.Release.Name + ")"
		}
		m.bold(sender).add(" "+p.Action+" "+what+" ").link(name, p.Release.HTMLURL, true)
	case "workflow_run":
		run := p.WorkflowRun
		if run == nil {
			return nil, mxerr.BadJSON("workflow_run event without workflow_run")
		}
		if p.Action != "completed" || run.Conclusion != "failure" {
			return nil, nil
		}
		name := run.Name
		if name == "" && p.Workflow != nil {
			name = p.Workflow.Name
		}
		m.add("❌ Workflow ").link(fmt.Sprintf("%s #%d", name, run.RunNumber), run.HTMLURL, true).add(" failed")
		if run.HeadBranch != "" {
			m.add(" on ").bold(run.HeadBranch)
		}
		if run.DisplayTitle != "" {
			m.add(": " + run.DisplayTitle)
		}
	case "star":
		if p.Action == "deleted" {
			m.bold(sender).add(" unstarred the repository")
		} else {
			m.bold(sender).add(" starred the repository")
		}
		if p.Repository != nil {
			m.add(fmt.Sprintf(" (%d ★)", p.Repository.StargazersCount))
		}
	default:
		m.add("GitHub event ").bold(event)
		if p.Action != "" {
			m.add(" (" + p.Action + ")")
		}
		if sender != "" {
			m.add(" by ").bold(sender)
		}
	}
	return m.content(), nil
}

func formatPush(m *msg, p *ghPayload) {
	who := p.Pusher.Name
	if who == "" && p.Sender != nil {
		who = p.Sender.Login
	}
	ref, kind := p.Ref, "branch"
	if r, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		ref = r
	} else if r, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		ref, kind = r, "tag"
	}
	m.bold(who)
	switch {
	case p.Deleted:
		m.add(" deleted " + kind + " ").bold(ref)
		return
	case p.Created && len(p.Commits) == 0:
		m.add(" created " + kind + " ").bold(ref)
		if safeURL(p.Compare) {
			m.add(" ").link("(compare)", p.Compare, false)
			m.text.WriteString(" " + p.Compare)
		}
		return
	}
	verb := " pushed"
	if p.Forced {
		verb = " force-pushed"
	}
	n := len(p.Commits)
	plural := "s"
	if n == 1 {
		plural = ""
	}
	m.add(fmt.Sprintf("%s %d commit%s to %s ", verb, n, plural, kind)).bold(ref)
	if p.Compare != "" {
		m.add(": ").link("compare", p.Compare, true)
	}
	m.html.WriteString("<ul>")
	for i, c := range p.Commits {
		if i == maxCommits {
			m.text.WriteString(fmt.Sprintf("\n… and %d more", n-maxCommits))
			m.html.WriteString(fmt.Sprintf("<li>… and %d more</li>", n-maxCommits))
			break
		}
		short := c.ID
		if len(short) > 7 {
			short = short[:7]
		}
		title, _, _ := strings.Cut(c.Message, "\n")
		author := c.Author.Username
		if author == "" {
			author = c.Author.Name
		}
		m.text.WriteString("\n• ")
		m.html.WriteString("<li>")
		m.link(short, c.URL, false)
		m.text.WriteString(" " + c.URL)
		m.add(" " + truncate(title, 120))
		if author != "" {
			m.add(" — " + author)
		}
		m.html.WriteString("</li>")
	}
	m.html.WriteString("</ul>")
}
