package media

import "testing"

func TestPreviewParseHTML(t *testing.T) {
	page := []byte("<html><head><meta charset=\"iso-8859-1\"><title>Caf\xe9</title>" +
		`<script>var x = "<meta property='og:title' content='script'>";</script>` +
		`<meta property="og:site_name" content="Site"><meta property="og:site_name" content="Second">` +
		`<meta name="description" content="  spaced   out  "><meta property="og:empty" content=""></head></html>`)
	og := previewParseHTML(page, "text/html")
	want := map[string]string{"og:title": "Café", "og:site_name": "Site", "og:description": "spaced out"}
	if len(og) != len(want) {
		t.Fatalf("og = %v, want %v", og, want)
	}
	for k, v := range want {
		if og[k] != v {
			t.Errorf("%s = %q, want %q", k, og[k], v)
		}
	}
}
