package sshtest

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// SFTP packet types and status codes (draft-ietf-secsh-filexfer-02) the filter reads or writes.
const (
	fxpOpen          = 3
	fxpWrite         = 6
	fxpStatus        = 101
	fxpHandle        = 102
	fxpExtended      = 200
	fxpExtendedReply = 201
	fxFailure        = 4
)

// maxPacket bounds an SFTP packet the filter buffers.
const maxPacket = 1 << 24

// sftpFilter sits between an SFTP session's channel and pkg/sftp's server,
// for Options.OnSFTPOpen and Options.DiskFree: it passes whole request
// packets to the server, answering some itself, and passes the server's
// replies back once they are whole.
type sftpFilter struct {
	ch   io.ReadWriteCloser
	opts *Options

	in []byte // request bytes passed on, not yet read by the server

	mu    sync.Mutex // guards what follows and writes to ch
	out   []byte     // reply bytes of a packet not yet whole
	opens map[uint32]string
}

func newSFTPFilter(ch io.ReadWriteCloser, opts *Options) *sftpFilter {
	return &sftpFilter{ch: ch, opts: opts, opens: map[uint32]string{}}
}

// Read gives the server the requests it is to handle, whole packets at a time.
func (f *sftpFilter) Read(p []byte) (int, error) {
	for len(f.in) == 0 {
		pkt, err := readPacket(f.ch)
		if err != nil {
			return 0, err
		}
		reply := f.request(pkt)
		if reply == nil {
			f.in = pkt
			continue
		}
		f.mu.Lock()
		_, err = f.ch.Write(reply)
		f.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, f.in)
	f.in = f.in[n:]
	return n, nil
}

// request notes an OPEN's path, and returns the reply to a request the
// filter answers itself (nil: the server answers).
func (f *sftpFilter) request(pkt []byte) []byte {
	if len(pkt) < 9 {
		return nil
	}
	typ, id, body := pkt[4], binary.BigEndian.Uint32(pkt[5:9]), pkt[9:]
	switch typ {
	case fxpOpen:
		if name, _, ok := sshString(body); ok && f.opts.OnSFTPOpen != nil {
			f.mu.Lock()
			f.opens[id] = string(name)
			f.mu.Unlock()
		}
	case fxpWrite:
		_, rest, ok := sshString(body) // handle
		if !ok || len(rest) < 12 || f.opts.DiskFree <= 0 {
			return nil
		}
		offset := binary.BigEndian.Uint64(rest)
		n := binary.BigEndian.Uint32(rest[8:])
		if offset+uint64(n) > uint64(f.opts.DiskFree) {
			return statusPacket(id, fxFailure, "Failure")
		}
	case fxpExtended:
		name, _, ok := sshString(body)
		if ok && string(name) == "statvfs@openssh.com" && f.opts.DiskFree > 0 {
			// bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax
			vals := []uint64{1, 1, uint64(f.opts.DiskFree) * 4, uint64(f.opts.DiskFree), uint64(f.opts.DiskFree), 1000, 900, 900, 1, 0, 255}
			b := binary.BigEndian.AppendUint32(nil, id)
			for _, v := range vals {
				b = binary.BigEndian.AppendUint64(b, v)
			}
			return packet(fxpExtendedReply, b)
		}
	}
	return nil
}

// Write takes the server's replies and sends each once whole, calling
// OnSFTPOpen for the file an OPEN opened before its client can hear of it.
func (f *sftpFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.out = append(f.out, p...)
	for len(f.out) >= 4 {
		n := int(binary.BigEndian.Uint32(f.out))
		if n > maxPacket {
			return 0, errors.New("sshtest: sftp reply too large")
		}
		if len(f.out) < 4+n {
			break
		}
		pkt := f.out[:4+n]
		if n >= 5 {
			id := binary.BigEndian.Uint32(pkt[5:9])
			if name, ok := f.opens[id]; ok && (pkt[4] == fxpHandle || pkt[4] == fxpStatus) {
				delete(f.opens, id)
				if pkt[4] == fxpHandle {
					f.opts.OnSFTPOpen(name)
				}
			}
		}
		if _, err := f.ch.Write(pkt); err != nil {
			return 0, err
		}
		f.out = f.out[4+n:]
	}
	return len(p), nil
}

func (f *sftpFilter) Close() error { return f.ch.Close() }

func readPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxPacket {
		return nil, errors.New("sshtest: sftp request too large")
	}
	pkt := make([]byte, 4+n)
	copy(pkt, hdr[:])
	_, err := io.ReadFull(r, pkt[4:])
	return pkt, err
}

// sshString splits an SSH string (uint32 length, bytes) off b.
func sshString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) < uint64(n) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}

func packet(typ byte, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(body)))
	return append(append(b, typ), body...)
}

func statusPacket(id, code uint32, msg string) []byte {
	b := binary.BigEndian.AppendUint32(nil, id)
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	b = append(b, msg...)
	b = binary.BigEndian.AppendUint32(b, 0) // language tag
	return packet(fxpStatus, b)
}
