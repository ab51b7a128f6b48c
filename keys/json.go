package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// canonical returns raw in canonical JSON without its "unsigned" member
// (which no signature covers and which the server fills in itself).
func canonical(raw json.RawMessage) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	delete(obj, "unsigned")
	buf, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(buf)
}

// signedContent is raw in canonical JSON without "signatures" and
// "unsigned": what a signature covers, to compare two versions of a key.
func signedContent(raw json.RawMessage) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	delete(obj, "unsigned")
	delete(obj, "signatures")
	buf, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(buf)
}

// sameContent reports whether a and b are the same key, signatures aside.
func sameContent(a, b json.RawMessage) bool {
	ca, err1 := signedContent(a)
	cb, err2 := signedContent(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca, cb)
}

// decodeKey decodes an unpadded base64 ed25519 public key.
func decodeKey(b64 string) (ed25519.PublicKey, error) {
	var b spec.Base64Bytes
	if err := b.Decode(b64); err != nil {
		return nil, fmt.Errorf("key is not unpadded base64")
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key is not an ed25519 key")
	}
	return ed25519.PublicKey(b), nil
}

// verify checks that signer signed raw with the ed25519 key pubB64 under
// the key ID "ed25519:<keyName>".
func verify(signer, keyName, pubB64 string, raw []byte) error {
	pub, err := decodeKey(pubB64)
	if err != nil {
		return err
	}
	return gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID("ed25519:"+keyName), pub, raw)
}

// signatures of a signed JSON object: signer user ID -> key ID -> signature.
type signatures map[string]map[string]string

// sigRow is one stored signature.
type sigRow struct {
	target, signer, keyID, sig string
}

// withSignatures returns raw with the signatures extra merged into its
// "signatures", and unsigned set when it is not nil.
func withSignatures(raw json.RawMessage, extra []sigRow, unsigned any) (json.RawMessage, error) {
	if len(extra) == 0 && unsigned == nil {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	if len(extra) > 0 {
		sigs := signatures{}
		if s, ok := obj["signatures"]; ok {
			if err := json.Unmarshal(s, &sigs); err != nil {
				return nil, err
			}
		}
		for _, e := range extra {
			if sigs[e.signer] == nil {
				sigs[e.signer] = map[string]string{}
			}
			sigs[e.signer][e.keyID] = e.sig
		}
		buf, err := json.Marshal(sigs)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = buf
	}
	if unsigned != nil {
		buf, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = buf
	}
	return json.Marshal(obj)
}

// serverOf is the server name of a user ID, or an error if userID is not
// one.
func serverOf(userID string) (string, error) {
	local, server, ok := strings.Cut(userID, ":")
	if !ok || len(local) < 2 || local[0] != '@' || server == "" || len(userID) > 255 {
		return "", mxerr.InvalidParam("%q is not a valid user ID", userID)
	}
	return server, nil
}
