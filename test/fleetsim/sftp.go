package main

import (
	"bytes"
	"io"
	"os"
	"path"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// serveSFTP serves the sftp subsystem: writes are counted and discarded, or kept in memory with
// Options.KeepUploads; only kept files can be read or stat'ed. There is no file system behind it.
func (f *Fleet) serveSFTP(e *Endpoint, ch ssh.Channel) {
	e.Stats.SFTPSessions.Add(1)
	h := &sftpStore{e: e, keep: f.opts.KeepUploads}
	srv := sftp.NewRequestServer(ch, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h})
	srv.Serve()
	srv.Close()
}

type sftpStore struct {
	e    *Endpoint
	keep bool
}

// upload is one file being written.
type upload struct {
	s    *sftpStore
	path string
	mu   sync.Mutex
	buf  []byte
}

func (u *upload) WriteAt(p []byte, off int64) (int, error) {
	u.s.e.Stats.SFTPBytes.Add(int64(len(p)))
	if !u.s.keep {
		return len(p), nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(u.buf)) {
		u.buf = append(u.buf, make([]byte, end-int64(len(u.buf)))...)
	}
	copy(u.buf[off:], p)
	return len(p), nil
}

// Close ends the write: the file counts, and is kept when asked.
func (u *upload) Close() error {
	u.s.e.Stats.SFTPFiles.Add(1)
	if u.s.keep {
		u.s.e.mu.Lock()
		u.s.e.files[u.path] = u.buf
		u.s.e.mu.Unlock()
	}
	return nil
}

func (s *sftpStore) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return &upload{s: s, path: path.Clean(r.Filepath)}, nil
}

func (s *sftpStore) file(p string) ([]byte, bool) {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	b, ok := s.e.files[path.Clean(p)]
	return b, ok
}

func (s *sftpStore) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	if b, ok := s.file(r.Filepath); ok {
		return bytes.NewReader(b), nil
	}
	return nil, os.ErrNotExist
}

// Filecmd accepts every change; renames and removals apply to kept files.
func (s *sftpStore) Filecmd(r *sftp.Request) error {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	from := path.Clean(r.Filepath)
	switch r.Method {
	case "Rename", "PosixRename":
		if b, ok := s.e.files[from]; ok {
			delete(s.e.files, from)
			s.e.files[path.Clean(r.Target)] = b
		}
	case "Remove":
		delete(s.e.files, from)
	}
	return nil
}

func (s *sftpStore) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "Stat", "Lstat":
		if b, ok := s.file(r.Filepath); ok {
			return listerAt{fileInfo{name: path.Base(r.Filepath), size: int64(len(b))}}, nil
		}
		return nil, os.ErrNotExist
	}
	return listerAt{}, nil
}

type listerAt []os.FileInfo

func (l listerAt) ListAt(out []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	return n, nil
}

type fileInfo struct {
	name string
	size int64
}

func (fi fileInfo) Name() string       { return fi.name }
func (fi fileInfo) Size() int64        { return fi.size }
func (fi fileInfo) Mode() os.FileMode  { return 0o644 }
func (fi fileInfo) ModTime() time.Time { return time.Time{} }
func (fi fileInfo) IsDir() bool        { return false }
func (fi fileInfo) Sys() any           { return nil }
