package ssh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
)

// File is one file to push.
type File struct {
	Path   string      // absolute remote path
	Mode   os.FileMode // e.g. 0600 for keys; 0 means 0644
	Data   []byte      // content, or
	Source string      // a local file streamed from disk
	SHA256 string      // optional precomputed hex digest of the content
}

// upload is a File being pushed, with its resolved digest and mode.
type upload struct {
	File
	index  int
	digest string
	perm   os.FileMode
	tmp    string // temp name in the target directory
	staged string // non-root: path in the staging directory
}

// SumsDir holds, on each host, the digests of large uploaded files keyed by
// their size, ctime (ns) and inode, so a re-run does not hash them again.
// Any change to a file (content, rename over it, touch) changes its ctime.
const SumsDir = "/var/lib/kubeforge/sums"

// cacheThreshold is the size from which a file's remote digest is cached.
const cacheThreshold = 1 << 20

// cached reports whether u's remote digest goes through the sums cache.
func (u *upload) cached() bool {
	if u.Source != "" {
		if st, err := os.Stat(u.Source); err == nil {
			return st.Size() >= cacheThreshold
		}
		return false
	}
	return len(u.Data) >= cacheThreshold
}

// checkScript defines chk INDEX PATH CACHED: it prints "INDEX MODE UID GID
// SHA256 -" for a regular file, taking the digest from the sums cache when
// the file's size, ctime and inode match what was recorded, and recording it
// otherwise. A stat without nanosecond ctimes disables the cache.
const checkScript = `
key() { k=$(stat -c '%s %.9Z %i' -- "$1" 2>/dev/null); case "$k" in *Z*|"") k=;; esac; }
sumfile() { s=$sums/$(printf %s "$1" | sha256sum | cut -c1-40); }
record() { key "$1"; [ -n "$k" ] || return 0; c=${k#* }; c=${c%%.*}; [ -n "$3" ] || [ $(( $(date +%s) - c )) -ge 2 ] || return 0; sumfile "$1"; mkdir -p "$sums" && printf '%s\n%s\n' "$k" "$2" > "$s.tmp" && mv -f "$s.tmp" "$s"; }
chk() {
  [ -f "$2" ] && [ ! -L "$2" ] || return 0
  st=$(stat -c '%a %u %g' -- "$2"); d=
  if [ "$3" = 1 ]; then
    key "$2"; sumfile "$2"
    if [ -n "$k" ] && [ -r "$s" ]; then { IFS= read -r ck; IFS= read -r cd; } < "$s"; [ "$ck" = "$k" ] && d=$cd; fi
    if [ -z "$d" ]; then d=$(sha256sum < "$2" | cut -d' ' -f1); record "$2" "$d"; fi
  else
    d=$(sha256sum < "$2" | cut -d' ' -f1)
  fi
  printf '%s %s %s -\n' "$1" "$st" "$d"
}
`

// recordSums writes the sums cache entries of large files just uploaded, so
// the next check needs no hashing.
func (c *Client) recordSums(ctx context.Context, ups []*upload) error {
	var script strings.Builder
	for _, u := range ups {
		if u.cached() {
			// Just written by us: recorded at once (the 2 s racy rule is for files others wrote).
			fmt.Fprintf(&script, "record %s %s ours\n", Quote(u.Path), u.digest)
		}
	}
	if script.Len() == 0 {
		return nil
	}
	if _, err := c.run(ctx, c.checkScript()+script.String(), nil, true); err != nil {
		return fmt.Errorf("record checksums on %s: %w", c.cfg.Host, err)
	}
	return nil
}

func (c *Client) checkScript() string {
	dir := c.cfg.SumsDir
	if dir == "" {
		dir = SumsDir
	}
	return "sums=" + Quote(dir) + checkScript
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Upload pushes files atomically and returns the paths that changed. Files whose remote content
// (sha256), mode and owner (root:root) already match are skipped; ONE remote command checks all of
// them. Parent directories are created. Each file is written to `.<base>.kubeforge-<random>` in its
// target directory (created by root with mode 0600, so no other user can ever open it), given its
// mode and owner, fsynced, then renamed into place; the temp file is removed on any failure. Source
// files are streamed. A non-root user uploads to a private staging directory and `sudo install`s
// the files into place (install creates its temp file 0600 too; same rename dance). A write the host
// fails (its disk is full) is a *WriteError.
func (c *Client) Upload(ctx context.Context, files []File) (changed []string, err error) {
	ups, err := c.prepare(files)
	if err != nil {
		return nil, err
	}
	todo, err := c.stale(ctx, ups)
	if err != nil || len(todo) == 0 {
		return nil, err
	}
	var dirs []string
	for _, u := range todo {
		if d := path.Dir(u.Path); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	sc, err := c.sftpClient(ctx)
	if err != nil {
		return nil, err
	}
	// Temp files of runs killed mid-write (an hour old and more) are swept from the directories written to.
	prepare, what := "mkdir -p -- "+quoteAll(dirs)+" && find "+quoteAll(dirs)+" -maxdepth 1 -type f -name '.*.kubeforge-*' -mmin +"+
		strconv.Itoa(int(staleTemp/time.Minute))+" -delete", "directories"
	if c.root() {
		prepare, what = prepare+createTemps(todo), "directories and temp files"
	}
	if _, err := c.run(ctx, prepare, nil, true); err != nil {
		return nil, fmt.Errorf("create %s on %s: %w", what, c.cfg.Host, err)
	}
	if c.root() {
		for i, u := range todo {
			if err := c.putDirect(ctx, sc, u); err != nil {
				for _, rest := range todo[i+1:] { // created empty, never written
					if rerr := sc.Remove(rest.tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
						c.cfg.Logger.Warn("remove temp file", "path", rest.tmp, "err", rerr)
					}
				}
				return changed, err
			}
			changed = append(changed, u.Path)
			c.cfg.Logger.Info("uploaded", "path", u.Path, "mode", fmt.Sprintf("%04o", u.perm), "sha256", u.digest)
		}
		return changed, c.recordSums(ctx, todo)
	}
	if err := c.putStaged(ctx, sc, todo); err != nil {
		return nil, err
	}
	for _, u := range todo {
		changed = append(changed, u.Path)
		c.cfg.Logger.Info("uploaded", "path", u.Path, "mode", fmt.Sprintf("%04o", u.perm), "sha256", u.digest)
	}
	return changed, c.recordSums(ctx, todo)
}

// prepare validates files and computes their digests.
func (c *Client) prepare(files []File) ([]*upload, error) {
	var ups []*upload
	seen := map[string]bool{}
	for i, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("upload to %s: path %q is not a clean absolute file path", c.cfg.Host, f.Path)
		}
		if seen[f.Path] {
			return nil, fmt.Errorf("upload to %s: %s given twice", c.cfg.Host, f.Path)
		}
		seen[f.Path] = true
		if f.Source != "" && f.Data != nil {
			return nil, fmt.Errorf("upload %s to %s: both Data and Source set", f.Path, c.cfg.Host)
		}
		u := &upload{File: f, index: i, perm: f.Mode.Perm()}
		if f.Mode == 0 {
			u.perm = 0o644
		}
		switch {
		case f.SHA256 != "":
			d := strings.ToLower(f.SHA256)
			if b, err := hex.DecodeString(d); err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("upload %s to %s: SHA256 %q is not a hex sha256 digest", f.Path, c.cfg.Host, f.SHA256)
			}
			u.digest = d
		case f.Source != "":
			src, err := os.Open(f.Source)
			if err != nil {
				return nil, fmt.Errorf("upload %s to %s: %w", f.Path, c.cfg.Host, err)
			}
			h := sha256.New()
			_, err = io.Copy(h, src)
			src.Close()
			if err != nil {
				return nil, fmt.Errorf("upload %s to %s: hash %s: %w", f.Path, c.cfg.Host, f.Source, err)
			}
			u.digest = hex.EncodeToString(h.Sum(nil))
		default:
			sum := sha256.Sum256(f.Data)
			u.digest = hex.EncodeToString(sum[:])
		}
		ups = append(ups, u)
	}
	return ups, nil
}

// stale returns the uploads whose remote file differs (content, mode or owner), with ONE command.
func (c *Client) stale(ctx context.Context, ups []*upload) ([]*upload, error) {
	reasons, err := c.diff(ctx, ups)
	if err != nil {
		return nil, err
	}
	var todo []*upload
	for i, u := range ups {
		if reasons[i] != "" {
			todo = append(todo, u)
		} else {
			c.cfg.Logger.Debug("unchanged", "path", u.Path)
		}
	}
	return todo, nil
}

// diff returns, for each upload, why the remote file differs ("" when it matches), with ONE command.
// Large files go through the sums cache one by one (chk); the small ones are stated and hashed by
// one stat and one sha256sum for all of them: a control plane's ~40 small files cost two processes,
// not ~200.
func (c *Client) diff(ctx context.Context, ups []*upload) ([]Reason, error) {
	if len(ups) == 0 {
		return nil, nil
	}
	var script strings.Builder
	script.WriteString(c.checkScript())
	small := map[string]int{} // path -> index, for the batched stat and sha256sum
	var list []string
	for i, u := range ups {
		if u.cached() || strings.ContainsAny(u.Path, "\\\n") { // sha256sum escapes such names: one by one
			fmt.Fprintf(&script, "chk %d %s %d\n", i, Quote(u.Path), boolInt(u.cached()))
			continue
		}
		small[u.Path] = i
		list = append(list, u.Path)
	}
	if len(list) > 0 {
		// Missing files print nothing on stdout (their errors are dropped).
		fmt.Fprintf(&script, "echo '#stat'; stat -c '%%a %%u %%g %%f %%n' -- %[1]s 2>/dev/null; echo '#sum'; sha256sum -- %[1]s 2>/dev/null; true\n", quoteAll(list))
	}
	out, err := c.run(ctx, script.String(), nil, true)
	if err != nil {
		return nil, fmt.Errorf("check files on %s: %w", c.cfg.Host, err)
	}
	reasons := make([]Reason, len(ups))
	for i := range reasons {
		reasons[i] = ReasonMissing
	}
	type stated struct{ mode, uid, gid string }
	stats := map[int]stated{}
	sums := map[int]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "#stat" || line == "#sum":
			section = line
		case section == "#stat": // mode uid gid rawmode(hex) path
			f := strings.SplitN(line, " ", 5)
			if len(f) < 5 {
				continue
			}
			i, ok := small[f[4]]
			raw, err := strconv.ParseUint(f[3], 16, 32)
			if ok && err == nil && raw&0o170000 == 0o100000 { // a regular file, not a link
				stats[i] = stated{f[0], f[1], f[2]}
			}
		case section == "#sum": // digest, two spaces (or " *"), path
			d, rest, ok := strings.Cut(line, " ")
			if i, found := small[rest[min(1, len(rest)):]]; ok && found {
				sums[i] = d
			}
		default: // chk: index mode uid gid digest -
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			if i, err := strconv.Atoi(f[0]); err == nil && i >= 0 && i < len(ups) {
				reasons[i] = compare(ups[i], f[1], f[2], f[3], f[4])
			}
		}
	}
	for i, st := range stats {
		if d, ok := sums[i]; ok {
			reasons[i] = compare(ups[i], st.mode, st.uid, st.gid, d)
		}
	}
	return reasons, nil
}

// compare says why the remote file with this octal mode, owner and digest is not u ("" when it is).
func compare(u *upload, mode, uid, gid, digest string) Reason {
	m, err := strconv.ParseUint(mode, 8, 32)
	switch {
	case digest != u.digest:
		return ReasonContent
	case err != nil || os.FileMode(m) != u.perm:
		return ReasonMode
	case uid != "0" || gid != "0":
		return ReasonOwner
	}
	return ""
}

// sftpClient returns the connection's SFTP session, opening it on first use (and redialling a
// lost connection).
func (c *Client) sftpClient(ctx context.Context) (*sftp.Client, error) {
	c.sftpMu.Lock()
	defer c.sftpMu.Unlock()
	var sc *sftp.Client
	err := c.withConn(ctx, "", func(cn *conn) error {
		if cn.sftp == nil {
			s, err := sftp.NewClient(cn.ssh, sftp.UseConcurrentWrites(true))
			if err != nil {
				return err
			}
			cn.sftp = s
		}
		sc = cn.sftp
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("start sftp on %s: %w", c.cfg.Host, err)
	}
	return sc, nil
}

// createTemps is the shell command (appended to the one that creates the
// directories) that creates each upload's temp file, empty, owned by root and
// with mode 0600 from its first instant. pkg/sftp's client cannot send a mode
// with its OPEN request, so a file it created would live with the SFTP
// server's default mode (0644 under umask 022) until a CHMOD, and any local
// user could open it in between and read a key written into it afterwards.
func createTemps(ups []*upload) string {
	var temps []string
	for _, u := range ups {
		u.tmp = tempName(u.Path)
		temps = append(temps, u.tmp)
	}
	q := quoteAll(temps)
	return " && { umask 077; set -C; for t in " + q + "; do : > \"$t\" || { rm -f -- " + q + "; exit 1; }; done; }"
}

// putDirect writes u as root into its temp file (created by createTemps):
// mode, owner, content, fsync, rename.
func (c *Client) putDirect(ctx context.Context, sc *sftp.Client, u *upload) (err error) {
	discard := func() {
		if rerr := sc.Remove(u.tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			c.cfg.Logger.Warn("remove temp file", "path", u.tmp, "err", rerr)
		}
	}
	if err := c.pool.uploads.Acquire(ctx, 1); err != nil {
		discard()
		return fmt.Errorf("upload %s to %s: %w", u.Path, c.cfg.Host, err)
	}
	defer c.pool.uploads.Release(1)
	f, err := sc.OpenFile(u.tmp, os.O_WRONLY) // never O_CREATE: see createTemps
	if err != nil {
		discard()
		return fmt.Errorf("upload %s to %s: open %s: %w", u.Path, c.cfg.Host, u.tmp, err)
	}
	closeAndDiscard := sync.OnceFunc(func() { f.Close(); discard() })
	defer func() {
		if err != nil {
			closeAndDiscard()
		}
	}()
	wrap := func(what string, err error) error {
		return fmt.Errorf("upload %s to %s: %s: %w", u.Path, c.cfg.Host, what, err)
	}
	if err := f.Chmod(u.perm); err != nil {
		return wrap("chmod", err)
	}
	if err := f.Chown(0, 0); err != nil {
		return wrap("chown", err)
	}
	if err := c.copyContent(ctx, f, u); err != nil {
		if !serverWriteFailed(err) {
			return wrap("write", err)
		}
		closeAndDiscard() // what is free is measured without the partial file
		return c.writeError(sc, u, u.tmp, err)
	}
	fsynced := false
	if _, ok := sc.HasExtension("fsync@openssh.com"); ok {
		if err := f.Sync(); err != nil {
			return wrap("fsync", err)
		}
		fsynced = true
	}
	if err := f.Close(); err != nil {
		return wrap("close", err)
	}
	if !fsynced { // server without fsync@openssh.com
		if _, err := c.run(ctx, "sync -- "+Quote(u.tmp), nil, true); err != nil {
			return wrap("fsync", err)
		}
	}
	if err := sc.PosixRename(u.tmp, u.Path); err != nil {
		return wrap("rename", err)
	}
	return nil
}

// putStaged uploads files as a non-root user into a private staging directory, then ONE sudo command
// installs each into a temp name in its target directory (mode, owner root:root), fsyncs and renames it.
func (c *Client) putStaged(ctx context.Context, sc *sftp.Client, todo []*upload) error {
	stage, err := c.staging(ctx)
	if err != nil {
		return err
	}
	var staged []string
	cleanup := func() {
		for _, s := range staged {
			_ = sc.Remove(s)
		}
	}
	for _, u := range todo {
		u.staged = path.Join(stage, path.Base(tempName(u.Path)))
		u.tmp = tempName(u.Path)
		if err := c.putStagedFile(ctx, sc, u); err != nil {
			cleanup()
			return err
		}
		staged = append(staged, u.staged)
	}
	var b strings.Builder
	var temps []string
	for _, u := range todo {
		temps = append(temps, u.tmp)
	}
	fmt.Fprintf(&b, "cleanup() { rm -f -- %s %s; }; trap cleanup EXIT; set -e; ", quoteAll(temps), quoteAll(staged))
	for _, u := range todo {
		fmt.Fprintf(&b, "install -m %04o -o root -g root -- %s %s; sync -- %s; mv -f -- %s %s; ",
			u.perm, Quote(u.staged), Quote(u.tmp), Quote(u.tmp), Quote(u.tmp), Quote(u.Path))
	}
	if _, err := c.run(ctx, b.String(), nil, true); err != nil {
		cleanup()
		return fmt.Errorf("install uploaded files on %s: %w", c.cfg.Host, err)
	}
	return nil
}

func (c *Client) putStagedFile(ctx context.Context, sc *sftp.Client, u *upload) (err error) {
	if err := c.pool.uploads.Acquire(ctx, 1); err != nil {
		return fmt.Errorf("upload %s to %s: %w", u.Path, c.cfg.Host, err)
	}
	defer c.pool.uploads.Release(1)
	f, err := sc.OpenFile(u.staged, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("upload %s to %s: create %s: %w", u.Path, c.cfg.Host, u.staged, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			_ = sc.Remove(u.staged)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("upload %s to %s: chmod staged file: %w", u.Path, c.cfg.Host, err)
	}
	if err := c.copyContent(ctx, f, u); err != nil {
		if !serverWriteFailed(err) {
			return fmt.Errorf("upload %s to %s: write staged file: %w", u.Path, c.cfg.Host, err)
		}
		f.Close()
		_ = sc.Remove(u.staged) // what is free is measured without the partial file
		return c.writeError(sc, u, u.staged, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("upload %s to %s: close staged file: %w", u.Path, c.cfg.Host, err)
	}
	return nil
}

// staging returns the user's private staging directory on the host, creating it on first use.
func (c *Client) staging(ctx context.Context) (string, error) {
	c.sftpMu.Lock()
	defer c.sftpMu.Unlock()
	if c.stageDir != "" {
		return c.stageDir, nil
	}
	out, err := c.run(ctx, "mktemp -d \"${TMPDIR:-/tmp}/kubeforge-upload.XXXXXXXX\"", nil, false)
	if err != nil {
		return "", fmt.Errorf("create upload staging directory on %s: %w", c.cfg.Host, err)
	}
	c.stageDir = strings.TrimSpace(out)
	return c.stageDir, nil
}

// copyContent writes u's content to w, streaming Source from disk, and checks the digest of what was sent.
func (c *Client) copyContent(ctx context.Context, w io.Writer, u *upload) error {
	var r io.Reader
	var size int64
	if u.Source != "" {
		src, err := os.Open(u.Source)
		if err != nil {
			return err
		}
		defer src.Close()
		st, err := src.Stat()
		if err != nil {
			return err
		}
		r, size = src, st.Size()
	} else {
		r, size = bytes.NewReader(u.Data), int64(len(u.Data))
	}
	h := sha256.New()
	start := time.Now()
	// A LimitedReader tells pkg/sftp the size, so it pipelines its writes
	// (concurrent in-flight packets) instead of waiting for each reply. A file
	// that grows meanwhile is caught by the digest check.
	n, err := io.Copy(w, &io.LimitedReader{R: io.TeeReader(&ctxReader{ctx: ctx, r: r}, h), N: size})
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != u.digest {
		return fmt.Errorf("content sha256 %s does not match the expected %s (file changed while uploading, or wrong SHA256 given)", got, u.digest)
	}
	c.cfg.Logger.Debug("sent", "path", u.Path, "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// tempName is `.<base>.kubeforge-<random>` in p's directory.
// staleTemp is the age past which a temp file is a killed run's leftover:
// no upload takes that long between creating its temp file and renaming it.
const staleTemp = time.Hour

func tempName(p string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	dir, base := path.Split(p)
	return dir + "." + base + ".kubeforge-" + hex.EncodeToString(b)
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = Quote(s)
	}
	return strings.Join(q, " ")
}

// WriteError is a file a host could not write: the SFTP server failed a
// write (SSH_FX_FAILURE is all OpenSSH says of ENOSPC, EDQUOT or EIO), most
// likely because the filesystem is full. The partial file was removed.
type WriteError struct {
	Host string
	Path string // the file being uploaded
	Temp string // the file that was being written (a temp name, removed)
	Need int64  // the file's size
	Free int64  // bytes free on Temp's filesystem once it was removed; -1 when the host did not say
	Err  error
}

// Error names the host, the file, what the server said and how much space there is.
func (e *WriteError) Error() string {
	msg := fmt.Sprintf("upload %s to %s: write %s: %v", e.Path, e.Host, e.Temp, e.Err)
	dir := path.Dir(e.Temp)
	switch {
	case e.Free < 0:
		return msg + fmt.Sprintf("; most likely out of space: the file needs %s (check `df -h %s` on %s)", sizeText(e.Need), dir, e.Host)
	case e.Free < e.Need:
		return msg + fmt.Sprintf("; out of space: the file needs %s, the filesystem of %s has %s free on %s", sizeText(e.Need), dir, sizeText(e.Free), e.Host)
	}
	return msg + fmt.Sprintf("; most likely out of space (or quota): the file needs %s, the filesystem of %s reports %s free on %s (check `df -h %[2]s` and quotas)",
		sizeText(e.Need), dir, sizeText(e.Free), e.Host)
}

// Unwrap returns the SFTP server's error.
func (e *WriteError) Unwrap() error { return e.Err }

// serverWriteFailed reports whether err is the SFTP server failing a write
// (not the connection, the caller or the local source).
func serverWriteFailed(err error) bool {
	var se *sftp.StatusError
	return errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxFailure
}

// writeError describes the failed write of u into tmp (already removed),
// with the free space of tmp's filesystem (statvfs@openssh.com).
func (c *Client) writeError(sc *sftp.Client, u *upload, tmp string, err error) error {
	e := &WriteError{Host: c.cfg.Host, Path: u.Path, Temp: tmp, Need: u.size(), Free: -1, Err: err}
	if _, ok := sc.HasExtension("statvfs@openssh.com"); ok {
		if st, serr := sc.StatVFS(path.Dir(tmp)); serr == nil {
			e.Free = int64(st.FreeSpace())
		}
	}
	c.cfg.Logger.Warn("write failed", "path", u.Path, "temp", tmp, "need", e.Need, "free", e.Free, "err", err)
	return e
}

// size is the number of bytes of u's content.
func (u *upload) size() int64 {
	if u.Source != "" {
		if st, err := os.Stat(u.Source); err == nil {
			return st.Size()
		}
		return 0
	}
	return int64(len(u.Data))
}

// sizeText is n bytes for people: "812 B", "12.0 MiB".
func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%d bytes)", float64(n)/float64(div), "KMGTP"[exp], n)
}
