package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Cross-signing.
// https://spec.matrix.org/v1.19/client-server-api/#cross-signing

// ErrAuthRequired is returned by UploadCrossSigningKeys when the upload
// would replace keys and the caller has not passed user-interactive auth.
var ErrAuthRequired = errors.New("keys: user-interactive authentication required")

// CrossSigningUpload is the body of POST /keys/device_signing/upload
// (its "auth" aside).
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysdevice_signingupload
type CrossSigningUpload struct {
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
	UserSigningKey json.RawMessage `json:"user_signing_key"`
}

// crossSigningKeyObject is the CrossSigningKey object, for validation.
type crossSigningKeyObject struct {
	UserID     string            `json:"user_id"`
	Usage      []string          `json:"usage"`
	Keys       map[string]string `json:"keys"`
	Signatures signatures        `json:"signatures"`
}

// newCrossSigningKey is a validated uploaded cross-signing key.
type newCrossSigningKey struct {
	typ, pub string
	json     json.RawMessage // canonical
}

func parseCrossSigningKey(field, typ string, raw json.RawMessage, userID string) (*newCrossSigningKey, error) {
	if len(raw) > maxKeyJSON*4 {
		return nil, mxerr.TooLarge("%s is too large", field)
	}
	var k crossSigningKeyObject
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, mxerr.BadJSON("%s is not a valid CrossSigningKey object: %v", field, err)
	}
	if k.UserID != userID {
		return nil, mxerr.InvalidParam("%s.user_id must be your user ID %s", field, userID)
	}
	if len(k.Usage) == 0 {
		return nil, mxerr.InvalidParam("%s.usage must be [%q]", field, typ)
	}
	for _, u := range k.Usage {
		if u != typ {
			return nil, mxerr.InvalidParam("%s.usage must be [%q]", field, typ)
		}
	}
	if len(k.Keys) != 1 {
		return nil, mxerr.InvalidParam("%s.keys must hold exactly one key", field)
	}
	var pub string
	for name, value := range k.Keys {
		p, ok := strings.CutPrefix(name, "ed25519:")
		if !ok || p != value {
			return nil, mxerr.InvalidParam("%s.keys must be {\"ed25519:<key>\": \"<key>\"}", field)
		}
		if _, err := decodeKey(value); err != nil {
			return nil, mxerr.InvalidParam("%s: %v", field, err)
		}
		pub = value
	}
	c, err := canonical(raw)
	if err != nil {
		return nil, mxerr.BadJSON("%s is not valid JSON", field)
	}
	return &newCrossSigningKey{typ: typ, pub: pub, json: c}, nil
}

// UploadCrossSigningKeys stores a user's cross-signing keys. Replacing an
// existing master key's set with different keys requires authenticated
// (the caller ran user-interactive auth): without it, ErrAuthRequired.
// Uploading the keys already stored is a no-op that needs no auth.
func (s *Service) UploadCrossSigningKeys(ctx context.Context, userID string, up CrossSigningUpload, authenticated bool) error {
	var keys []*newCrossSigningKey
	for _, f := range []struct {
		field, typ string
		raw        json.RawMessage
	}{
		{"master_key", typeMaster, up.MasterKey},
		{"self_signing_key", typeSelfSigning, up.SelfSigningKey},
		{"user_signing_key", typeUserSigning, up.UserSigningKey},
	} {
		if !present(f.raw) {
			continue
		}
		k, err := parseCrossSigningKey(f.field, f.typ, f.raw, userID)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil
	}
	devs, err := s.users.Devices(ctx, userID)
	if err != nil {
		return err
	}
	for _, d := range devs {
		for _, k := range keys {
			if k.pub == d.DeviceID {
				return mxerr.Forbidden("The public key of the %s key is one of your device IDs", k.typ)
			}
		}
	}
	return s.withTx(ctx, func(tx *database.Tx, ch *changes) error {
		stored, err := crossSigningKeys(ctx, tx, userID)
		if err != nil {
			return err
		}
		var changed []*newCrossSigningKey
		master, haveMaster := stored[typeMaster]
		for _, k := range keys {
			if old, ok := stored[k.typ]; !ok || old.pub != k.pub || !sameContent(old.json, k.json) {
				changed = append(changed, k)
			}
			if k.typ == typeMaster {
				master = storedKey{pub: k.pub, json: k.json}
			}
		}
		if len(changed) == 0 {
			return nil
		}
		if haveMaster && !authenticated {
			return ErrAuthRequired
		}
		for _, k := range keys {
			if k.typ == typeMaster {
				continue
			}
			if master.pub == "" {
				return mxerr.MissingParam("No master key is available to check the %s key's signature", k.typ)
			}
			if err := verify(userID, master.pub, master.pub, k.json); err != nil {
				return &mxerr.Error{Status: 400, Code: "M_INVALID_SIGNATURE",
					Message: fmt.Sprintf("The %s key is not signed by the master key: %v", k.typ, err)}
			}
		}
		for _, k := range changed {
			if old, ok := stored[k.typ]; ok && old.pub != k.pub {
				// Signatures made by the replaced key, and those of
				// a replaced master key, no longer mean anything.
				if _, err := tx.ExecContext(ctx, `DELETE FROM keys_signatures
					WHERE signer_user_id = $1 AND signer_key_id = $2`, userID, "ed25519:"+old.pub); err != nil {
					return fmt.Errorf("drop old signatures: %w", err)
				}
				if k.typ == typeMaster {
					if _, err := tx.ExecContext(ctx, `DELETE FROM keys_signatures
						WHERE target_user_id = $1 AND target_key_id = $2`, userID, old.pub); err != nil {
						return fmt.Errorf("drop old signatures: %w", err)
					}
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO keys_cross_signing_keys
				(user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json`,
				userID, k.typ, k.pub, string(k.json)); err != nil {
				return fmt.Errorf("store cross-signing key: %w", err)
			}
		}
		recordSigningKeys(ch, userID, changed)
		return s.record(ctx, tx, ch, userID)
	})
}

// Failure is one refused signature in the answer to
// POST /keys/signatures/upload.
type Failure struct {
	Errcode string `json:"errcode"`
	Error   string `json:"error"`
}

func failure(code, format string, a ...any) *Failure {
	return &Failure{Errcode: code, Error: fmt.Sprintf(format, a...)}
}

// maxSignedObject bounds one signed object of a signatures upload.
const maxSignedObject = 64 << 10

// UploadSignatures stores the signatures userID made: of their own devices
// by their self-signing key, of their own master key by their devices, of
// other users' master keys by their user-signing key. Each signed object
// must be the stored key, signatures aside. Signatures that do not verify,
// or of unknown keys, are refused and listed in the returned failures
// (user -> key ID -> error); the others are stored.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keyssignaturesupload
func (s *Service) UploadSignatures(ctx context.Context, userID string, body map[string]map[string]json.RawMessage) (map[string]map[string]*Failure, error) {
	local := string(s.users.ServerName())
	var failures map[string]map[string]*Failure
	err := s.withTx(ctx, func(tx *database.Tx, ch *changes) error {
		failures = map[string]map[string]*Failure{}
		fail := func(user, keyID string, f *Failure) {
			if failures[user] == nil {
				failures[user] = map[string]*Failure{}
			}
			failures[user][keyID] = f
		}
		csCache := map[string]map[string]storedKey{}
		cs := func(user string) (map[string]storedKey, error) {
			if k, ok := csCache[user]; ok {
				return k, nil
			}
			k, err := crossSigningKeys(ctx, tx, user)
			csCache[user] = k
			return k, err
		}
		targets := make([]string, 0, len(body))
		for t := range body {
			targets = append(targets, t)
		}
		sort.Strings(targets)
		for _, target := range targets {
			keyIDs := make([]string, 0, len(body[target]))
			for k := range body[target] {
				keyIDs = append(keyIDs, k)
			}
			sort.Strings(keyIDs)
			for _, keyID := range keyIDs {
				raw := body[target][keyID]
				rows, f, err := s.checkSignature(ctx, tx, cs, userID, target, keyID, raw, local)
				if err != nil {
					return err
				}
				if f != nil {
					fail(target, keyID, f)
					continue
				}
				for _, r := range rows {
					changed, err := storeSignature(ctx, tx, target, r)
					if err != nil {
						return err
					}
					if changed {
						if err := s.record(ctx, tx, ch, target); err != nil {
							return err
						}
						if err := s.recordSignature(ctx, tx, ch, userID, target, r.target); err != nil {
							return err
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return failures, nil
}

// checkSignature checks the signatures by signer in one signed object of
// a signatures upload, returning the rows to store or why it is refused.
func (s *Service) checkSignature(ctx context.Context, tx *database.Tx, cs func(string) (map[string]storedKey, error),
	signer, target, keyID string, raw json.RawMessage, local string) ([]sigRow, *Failure, error) {
	if len(raw) > maxSignedObject {
		return nil, failure("M_TOO_LARGE", "The signed object is too large"), nil
	}
	var obj struct {
		Signatures signatures `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, failure("M_BAD_JSON", "The signed object is not valid: %v", err), nil
	}
	mine := obj.Signatures[signer]
	if len(mine) == 0 {
		return nil, failure("M_INVALID_SIGNATURE", "The object carries no signature by %s", signer), nil
	}
	server, err := serverOf(target)
	if err != nil {
		return nil, failure("M_INVALID_PARAM", "%q is not a valid user ID", target), nil
	}
	if server != local {
		return nil, failure("M_NOT_FOUND", "Keys of users on other servers are not available"), nil
	}
	signerKeys, err := cs(signer)
	if err != nil {
		return nil, nil, err
	}

	if target != signer {
		// Another user's master key, signed by the signer's user-signing key.
		targetKeys, err := cs(target)
		if err != nil {
			return nil, nil, err
		}
		master, ok := targetKeys[typeMaster]
		if !ok || master.pub != keyID {
			return nil, failure("M_NOT_FOUND", "%s has no master key %s", target, keyID), nil
		}
		usk, ok := signerKeys[typeUserSigning]
		if !ok {
			return nil, failure("M_NOT_FOUND", "You have no user-signing key"), nil
		}
		sig, ok := mine["ed25519:"+usk.pub]
		if !ok {
			return nil, failure("M_INVALID_SIGNATURE", "The key is not signed by your user-signing key"), nil
		}
		if !sameContent(master.json, raw) {
			return nil, failure("M_INVALID_SIGNATURE", "The signed object is not the stored key"), nil
		}
		if err := verify(signer, usk.pub, usk.pub, raw); err != nil {
			return nil, failure("M_INVALID_SIGNATURE", "Invalid signature: %v", err), nil
		}
		return []sigRow{{target: keyID, signer: signer, keyID: "ed25519:" + usk.pub, sig: sig}}, nil, nil
	}

	if master, ok := signerKeys[typeMaster]; ok && master.pub == keyID {
		// The signer's own master key, signed by their devices.
		if !sameContent(master.json, raw) {
			return nil, failure("M_INVALID_SIGNATURE", "The signed object is not the stored key"), nil
		}
		var rows []sigRow
		for sigKeyID, sig := range mine {
			name, ok := strings.CutPrefix(sigKeyID, "ed25519:")
			if !ok || name == master.pub {
				continue // the master key's own signature, or not ed25519
			}
			_, ed, err := deviceKey(ctx, tx, signer, name)
			if err != nil {
				return nil, nil, err
			}
			if ed == "" {
				return nil, failure("M_NOT_FOUND", "Unknown device %s", name), nil
			}
			if err := verify(signer, name, ed, raw); err != nil {
				return nil, failure("M_INVALID_SIGNATURE", "Invalid signature: %v", err), nil
			}
			rows = append(rows, sigRow{target: keyID, signer: signer, keyID: sigKeyID, sig: sig})
		}
		if len(rows) == 0 {
			return nil, failure("M_INVALID_SIGNATURE", "The master key carries no signature by one of your devices"), nil
		}
		return rows, nil, nil
	}

	// One of the signer's devices, signed by their self-signing key.
	dev, _, err := deviceKey(ctx, tx, signer, keyID)
	if err != nil {
		return nil, nil, err
	}
	if dev == nil {
		return nil, failure("M_NOT_FOUND", "Unknown device or key %s", keyID), nil
	}
	ssk, ok := signerKeys[typeSelfSigning]
	if !ok {
		return nil, failure("M_NOT_FOUND", "You have no self-signing key"), nil
	}
	sig, ok := mine["ed25519:"+ssk.pub]
	if !ok {
		return nil, failure("M_INVALID_SIGNATURE", "The device is not signed by your self-signing key"), nil
	}
	if !sameContent(dev, raw) {
		return nil, failure("M_INVALID_SIGNATURE", "The signed object is not the stored device key"), nil
	}
	if err := verify(signer, ssk.pub, ssk.pub, raw); err != nil {
		return nil, failure("M_INVALID_SIGNATURE", "Invalid signature: %v", err), nil
	}
	return []sigRow{{target: keyID, signer: signer, keyID: "ed25519:" + ssk.pub, sig: sig}}, nil, nil
}

// storeSignature stores one signature of a key of targetUser and reports
// whether it is new.
func storeSignature(ctx context.Context, tx *database.Tx, targetUser string, r sigRow) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO keys_signatures
		(target_user_id, target_key_id, signer_user_id, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
		DO UPDATE SET signature = excluded.signature WHERE keys_signatures.signature != excluded.signature`,
		targetUser, r.target, r.signer, r.keyID, r.sig)
	if err != nil {
		return false, fmt.Errorf("store signature: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}
