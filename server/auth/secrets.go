package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LoadOrCreateSecret returns the secret kept in dir/name, creating it (mode
// 0600, dir 0700) with a new random value when the file does not exist.
// created reports whether it was made now.
func LoadOrCreateSecret(dir, name, prefix string) (secret string, created bool, err error) {
	return LoadOrCreateSecretWith(dir, name, func() string { return NewSecret(prefix) })
}

// LoadOrCreateSecretWith is LoadOrCreateSecret with the new content made by
// newContent (called only when the file is created).
func LoadOrCreateSecretWith(dir, name string, newContent func() string) (secret string, created bool, err error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", false, fmt.Errorf("secret file %s is empty", path)
		}
		return s, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("read secret: %w", err)
	}
	newDirs := missingDirs(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("secret directory: %w", err)
	}
	// The entry of each directory made here in its parent, before any
	// secret is in it: a process that loses the race below finds them made.
	for _, d := range newDirs {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return "", false, fmt.Errorf("secret directory: %w", err)
		}
	}
	// Write a temporary file, then link it into place: the secret appears
	// whole or not at all, and of two processes starting together one wins.
	secret = newContent()
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return "", false, fmt.Errorf("create secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("create secret: %w", err)
	}
	// Synced before it is linked, and the directory after: a new secret is
	// printed once, and a crash must not leave the file empty or missing
	// once someone has copied it.
	if _, err := tmp.WriteString(secret + "\n"); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("write secret: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("write secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", false, fmt.Errorf("write secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return LoadOrCreateSecretWith(dir, name, newContent)
	} else if err != nil {
		return "", false, fmt.Errorf("create secret: %w", err)
	}
	if err := syncDir(dir); err != nil {
		os.Remove(path) // never shown: the next start makes another
		return "", false, fmt.Errorf("create secret: %w", err)
	}
	return secret, true, nil
}

// missingDirs lists dir and those of its parents that do not exist, which
// MkdirAll would create.
func missingDirs(dir string) []string {
	var out []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			return out
		}
		out = append(out, d)
		if filepath.Dir(d) == d {
			return out
		}
	}
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// ReadSecrets returns the secrets in an environment value and a file, one
// per line or comma-separated; either may be empty. A line is a comment
// from an entry that starts with "#" to its end, commas and all: the words
// of one are never a secret.
func ReadSecrets(envValue, file string) ([]string, error) {
	text := envValue
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read secrets: %w", err)
		}
		text += "\n" + string(b)
	}
	return entries(text, ","), nil
}

// entries splits text into its entries, per line and at sep, space around
// them trimmed and blank ones left out; an entry starting with "#" makes
// the rest of its line a comment, seps and all.
func entries(text, sep string) []string {
	var out []string
	for line := range strings.Lines(text) {
		for _, entry := range strings.Split(line, sep) {
			s := strings.TrimSpace(entry)
			if strings.HasPrefix(s, "#") {
				break
			}
			if s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
