// Command c2sp-vectors prints test vectors for secureml-audit's C2SP code, made with the Go
// reference implementations: golang.org/x/mod/sumdb/note (signed notes, Ed25519 note keys),
// github.com/transparency-dev/formats/note (cosignature/v1) and golang.org/x/mod/sumdb/tlog
// (RFC 6962 tree hashes and consistency proofs). Its output is tests/data/c2sp_go_vectors.json:
//
//	cd scripts/c2sp-vectors && go run . > ../../tests/data/c2sp_go_vectors.json
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func seed(label string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte(label))
	return ed25519.NewKeyFromSeed(s[:])
}

// skey encodes a private key the way note.GenerateKey does: PRIVATE+KEY+name+hash+base64(alg||seed).
func skey(name string, alg byte, priv ed25519.PrivateKey, hash uint32) string {
	return fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, hash,
		base64.StdEncoding.EncodeToString(append([]byte{alg}, priv.Seed()...)))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type hashes []tlog.Hash

func (h hashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = h[x]
	}
	return out, nil
}

func main() {
	const logName = "example.com/secureml-audit/test-log"
	const witnessName = "witness.example/w1"
	logKey := seed("secureml-audit c2sp vectors: log key")
	witnessKey := seed("secureml-audit c2sp vectors: witness key")

	vkey := must(note.NewEd25519VerifierKey(logName, logKey.Public().(ed25519.PublicKey)))
	verifier := must(note.NewVerifier(vkey))
	signer := must(note.NewSigner(skey(logName, 1, logKey, verifier.KeyHash())))

	// A tree of 37 records and its stored hashes, as tlog keeps them.
	var stored hashes
	leaves := []string{}
	for i := int64(0); i < 37; i++ {
		data := []byte(fmt.Sprintf("%064x", sha256.Sum256([]byte(fmt.Sprintf("event %d", i)))))
		leaves = append(leaves, string(data))
		stored = append(stored, must(tlog.StoredHashes(i, data, stored))...)
	}
	roots := map[string]string{}
	type proof struct {
		Old, New int64
		Proof    []string
	}
	proofs := []proof{}
	for n := int64(1); n <= 37; n++ {
		th := must(tlog.TreeHash(n, stored))
		roots[fmt.Sprint(n)] = hex.EncodeToString(th[:])
		for m := int64(1); m <= n; m++ {
			p := must(tlog.ProveTree(n, m, stored))
			hexes := []string{}
			for _, h := range p {
				hexes = append(hexes, hex.EncodeToString(h[:]))
			}
			proofs = append(proofs, proof{m, n, hexes})
			if err := tlog.CheckTree(p, n, must(tlog.TreeHash(n, stored)), m, must(tlog.TreeHash(m, stored))); err != nil {
				panic(err)
			}
		}
	}

	root := must(tlog.TreeHash(37, stored))
	text := fmt.Sprintf("%s\n37\n%s\n", logName, base64.StdEncoding.EncodeToString(root[:]))
	signed := must(note.Sign(&note.Note{Text: text}, signer))

	// cosignature/v1 by the witness, at a fixed time.
	wvkey := must(fnote.VKeyToCosignatureV1(must(note.NewEd25519VerifierKey(witnessName, witnessKey.Public().(ed25519.PublicKey)))))
	wverifier := must(fnote.NewVerifierForCosignatureV1(wvkey))
	wsigner := must(fnote.NewSignerForCosignatureV1(skey(witnessName, 4, witnessKey, wverifier.KeyHash())))
	cosigned := must(note.Sign(must(note.Open(signed, note.VerifierList(verifier))), signer, wsigner))
	opened := must(note.Open(cosigned, note.VerifierList(verifier, wverifier)))

	out := map[string]any{
		"generator":           "scripts/c2sp-vectors (golang.org/x/mod/sumdb/note, tlog; github.com/transparency-dev/formats/note)",
		"log_name":            logName,
		"log_seed":            hex.EncodeToString(logKey.Seed()),
		"log_vkey":            vkey,
		"witness_name":        witnessName,
		"witness_seed":        hex.EncodeToString(witnessKey.Seed()),
		"witness_vkey":        wvkey,
		"leaves":              leaves,
		"roots":               roots,
		"consistency":         proofs,
		"checkpoint_text":     text,
		"signed_checkpoint":   string(signed),
		"cosigned_checkpoint": string(cosigned),
		"verified_signatures": len(opened.Sigs),
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}
