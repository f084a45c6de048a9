// Command c2sp-vectors prints test vectors for secureml-audit's C2SP code, made with the Go
// reference implementations: golang.org/x/mod/sumdb/note (signed notes, Ed25519 note keys),
// github.com/transparency-dev/formats/note (cosignature/v1) and golang.org/x/mod/sumdb/tlog
// (RFC 6962 tree hashes and consistency proofs). Its output is tests/data/c2sp_go_vectors.json:
//
//	cd scripts/c2sp-vectors && go run . > ../../tests/data/c2sp_go_vectors.json
//
// With the argument "check" it instead verifies, with the same packages, what secureml-audit
// produced: a JSON object on stdin with "log_vkey", "witness_vkeys" and "proof" (the output of
// `secureml-audit prove --consistency`, whose NEW note carries the witnesses' cosignatures):
//
//	go run . check < input.json
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

func check() {
	var in struct {
		LogVkey      string   `json:"log_vkey"`
		WitnessVkeys []string `json:"witness_vkeys"`
		Proof        struct {
			Old   string   `json:"old"`
			New   string   `json:"new"`
			Proof []string `json:"proof"`
		} `json:"proof"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	verifiers := []note.Verifier{must(note.NewVerifier(in.LogVkey))}
	for _, v := range in.WitnessVkeys {
		verifiers = append(verifiers, must(fnote.NewVerifierForCosignatureV1(v)))
	}
	heads := []struct {
		size int64
		root tlog.Hash
	}{}
	for _, text := range []string{in.Proof.Old, in.Proof.New} {
		n := must(note.Open([]byte(text), note.VerifierList(verifiers...)))
		var origin, root string
		var size int64
		if _, err := fmt.Sscanf(n.Text, "%s\n%d\n%s\n", &origin, &size, &root); err != nil {
			panic(err)
		}
		var h tlog.Hash
		copy(h[:], must(base64.StdEncoding.DecodeString(root)))
		heads = append(heads, struct {
			size int64
			root tlog.Hash
		}{size, h})
		fmt.Printf("note of %s size %d: %d verified signatures\n", origin, size, len(n.Sigs))
	}
	var proof tlog.TreeProof
	for _, p := range in.Proof.Proof {
		var h tlog.Hash
		copy(h[:], must(base64.StdEncoding.DecodeString(p)))
		proof = append(proof, h)
	}
	if err := tlog.CheckTree(proof, heads[1].size, heads[1].root, heads[0].size, heads[0].root); err != nil {
		panic(err)
	}
	fmt.Printf("consistency proof %d -> %d verified by golang.org/x/mod/sumdb/tlog\n", heads[0].size, heads[1].size)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check" {
		check()
		return
	}
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
