package ctsync

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// nlSocket is a plain NETLINK_NETFILTER socket for the follower's
// requests, one at a time. It exists because a ctnetlink GET through
// github.com/mdlayher/netlink v1.11 never returns: the kernel flags its
// one-entry answer NLM_F_MULTI (ctnetlink_fill_info does so for any
// unicast answer) and follows it with the ACK, not with NLMSG_DONE, and
// that library keeps reading for the DONE of a multi-part answer. Here a
// request ends at its ACK or error, whatever the flags.
type nlSocket struct {
	fd  int
	seq uint32
	buf []byte
}

// nlTimeout bounds the wait for the kernel's answer to one request.
const nlTimeout = 5 * time.Second

// openNLSocket opens the socket in the calling thread's namespace.
func openNLSocket() (*nlSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open netfilter netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(nlTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("set netlink receive timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	return &nlSocket{fd: fd, buf: make([]byte, 64<<10)}, nil
}

func (s *nlSocket) Close() error { return unix.Close(s.fd) }

// execute sends one ctnetlink request with NLM_F_ACK and returns the
// ctnetlink messages answered before the ACK, or the kernel's error as a
// syscall.Errno (errors.Is(err, unix.EEXIST) works).
func (s *nlSocket) execute(typ netfilter.MessageType, flags netlink.HeaderFlags, attrs []netfilter.Attribute) ([]netlink.Message, error) {
	req, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: typ,
		Family:      netfilter.ProtoIPv4,
		Flags:       netlink.Request | netlink.Acknowledge | flags,
	}, attrs)
	if err != nil {
		return nil, err
	}
	s.seq++
	req.Header.Sequence = s.seq
	req.Header.Length = uint32(unix.NLMSG_HDRLEN + len(req.Data))
	b, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if err := unix.Sendto(s.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("send netlink request: %w", err)
	}
	var answer []netlink.Message
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receive netlink answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(s.buf[:n])
		if err != nil {
			return nil, fmt.Errorf("parse netlink answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != s.seq {
				continue // the answer to an earlier request that timed out
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, errors.New("short netlink error message")
				}
				// struct nlmsgerr starts with a negative errno, 0 for an ACK.
				if errno := -int32(uint32(m.Data[0]) | uint32(m.Data[1])<<8 | uint32(m.Data[2])<<16 | uint32(m.Data[3])<<24); errno != 0 {
					return nil, syscall.Errno(errno)
				}
				return answer, nil
			case unix.NLMSG_DONE:
				return answer, nil
			}
			answer = append(answer, netlink.Message{
				Header: netlink.Header{Length: m.Header.Len, Type: netlink.HeaderType(m.Header.Type),
					Flags: netlink.HeaderFlags(m.Header.Flags), Sequence: m.Header.Seq, PID: m.Header.Pid},
				Data: append([]byte(nil), m.Data...),
			})
		}
	}
}

// get returns the entry that holds tuple k in either direction.
func (s *nlSocket) get(k tupleKey) (conntrack.Flow, error) {
	msgs, err := s.execute(ipctnlMsgCTGet, 0, []netfilter.Attribute{tupleAttr(ctaTupleOrig, k)})
	if err != nil {
		return conntrack.Flow{}, err
	}
	if len(msgs) != 1 {
		return conntrack.Flow{}, fmt.Errorf("get answered %d messages", len(msgs))
	}
	// The answer is an IPCTNL_MSG_CT_NEW message, which the library
	// decodes as an event.
	var ev conntrack.Event
	if err := ev.Unmarshal(msgs[0]); err != nil || ev.Flow == nil {
		return conntrack.Flow{}, fmt.Errorf("decode get answer: %w", err)
	}
	return *ev.Flow, nil
}
