//! Byte-level tests of the decoder: requests as the kernel lays them out
//! in a ring entry (little-endian x86_64), written out byte by byte.

use super::*;

/// A request with opcode `opcode` on inode 5 from uid 1000.
fn req<'a>(opcode: u32, op: &'a [u8], payload: &'a [u8]) -> Incoming<'a> {
    Incoming {
        header: InHeader {
            len: 0,
            opcode,
            unique: 1,
            nodeid: 5,
            uid: 1000,
            gid: 100,
            pid: 42,
            total_extlen: 0,
            padding: 0,
        },
        op,
        payload,
    }
}

/// Decodes with a sink that takes nothing.
fn decode<'a>(
    r: &Incoming<'a>,
    sink: &'a mut dyn FnMut(crate::request::DirEntry<'_>) -> bool,
) -> Result<Op<'a>, Fail> {
    op(r, sink)
}

#[test]
fn lookup_takes_the_name_up_to_its_nul() {
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let r = req(op::LOOKUP, &[], b"sga\0junk");
    let Ok(Op::Lookup { name }) = decode(&r, &mut sink) else {
        panic!("not a lookup")
    };
    assert_eq!(name, "sga");
    assert_eq!(ino(&r), Ino(5));
}

#[test]
fn setattr_reads_the_valid_bits() {
    // fuse_setattr_in: valid = MODE | ATIME | ATIME_NOW | MTIME (0xb1),
    // mtime = 1000 s + 5 ns, mode = 0o600; the rest zero.
    let mut b = [0u8; 88];
    b[0] = 0xb1;
    b[40..48].copy_from_slice(&1000u64.to_le_bytes()); // mtime
    b[60..64].copy_from_slice(&5u32.to_le_bytes()); // mtimensec
    b[68..72].copy_from_slice(&0o600u32.to_le_bytes()); // mode
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let r = req(op::SETATTR, &b, &[]);
    let Ok(Op::Setattr(ch)) = decode(&r, &mut sink) else {
        panic!("not a setattr")
    };
    assert_eq!(ch.mode, Some(0o600));
    assert_eq!((ch.uid, ch.gid, ch.size), (None, None, None));
    assert_eq!(ch.atime, Some(SetTime::Now));
    let at = UNIX_EPOCH + Duration::new(1000, 5);
    assert_eq!(ch.mtime, Some(SetTime::At(at)));
}

#[test]
fn rename2_carries_its_flags_and_both_names() {
    // fuse_rename2_in: newdir = 9, flags = RENAME_NOREPLACE (1).
    let b = [9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let r = req(op::RENAME2, &b, b"old\0new\0");
    let Ok(Op::Rename {
        name,
        newdir,
        newname,
        flags,
    }) = decode(&r, &mut sink)
    else {
        panic!("not a rename")
    };
    assert_eq!((name, newname), (OsStr::new("old"), OsStr::new("new")));
    assert_eq!((newdir, flags), (Ino(9), RenameFlags(1)));
    // Plain RENAME has no flags word.
    let r = req(op::RENAME, &b[..8], b"a\0b\0");
    let Ok(Op::Rename { flags, .. }) = decode(&r, &mut sink) else {
        panic!("not a rename")
    };
    assert_eq!(flags, RenameFlags(0));
}

#[test]
fn create_and_open_take_their_flags() {
    // fuse_create_in: flags = O_RDWR|O_CREAT (0o102), mode = 0o100644.
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&0o102u32.to_le_bytes());
    b[4..8].copy_from_slice(&0o100644u32.to_le_bytes());
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let r = req(op::CREATE, &b, b"r1\0");
    let Ok(Op::Create { name, mode, flags }) = decode(&r, &mut sink) else {
        panic!("not a create")
    };
    assert_eq!(
        (name, mode, flags),
        (OsStr::new("r1"), 0o100644, OpenFlags(0o102))
    );
    let r = req(op::OPEN, &[2, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert!(matches!(
        decode(&r, &mut sink),
        Ok(Op::Open {
            flags: OpenFlags(2)
        })
    ));
}

#[test]
fn write_takes_exactly_its_size_of_payload() {
    // fuse_write_in: fh = 3, offset = 4096, size = 4.
    let mut b = [0u8; 40];
    b[0] = 3;
    b[8..16].copy_from_slice(&4096u64.to_le_bytes());
    b[16] = 4;
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let r = req(op::WRITE, &b, b"datamore");
    let Ok(Op::Write { fh, offset, data }) = decode(&r, &mut sink) else {
        panic!("not a write")
    };
    assert_eq!((fh, offset, data), (Fh(3), 4096, &b"data"[..]));
    // A size beyond the payload is malformed, not a read past it.
    b[16] = 9;
    let r = req(op::WRITE, &b, b"data");
    assert_eq!(decode(&r, &mut sink).err().unwrap().errno, Errno::EINVAL);
}

#[test]
fn ioctl_takes_its_input_and_refuses_unrestricted() {
    // fuse_ioctl_in: fh = 2, flags = 0, cmd = 0x4010_7801, in_size = 3,
    // out_size = 16.
    let mut b = [0u8; 32];
    b[0] = 2;
    b[12..16].copy_from_slice(&0x4010_7801u32.to_le_bytes());
    b[24] = 3;
    b[28] = 16;
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let r = req(op::IOCTL, &b, b"abcdef");
    let Ok(Op::Ioctl {
        fh,
        cmd,
        input,
        out_size,
    }) = decode(&r, &mut sink)
    else {
        panic!("not an ioctl")
    };
    assert_eq!(
        (fh, cmd, input, out_size),
        (Fh(2), 0x4010_7801, &b"abc"[..], 16)
    );
    b[8] = IOCTL_UNRESTRICTED as u8;
    let r = req(op::IOCTL, &b, b"abcdef");
    assert_eq!(decode(&r, &mut sink).err().unwrap().errno, Errno::ENOSYS);
}

#[test]
fn xattr_requests_take_name_size_and_value() {
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let r = req(
        op::GETXATTR,
        &[0, 1, 0, 0, 0, 0, 0, 0],
        b"user.mshare.attach\0",
    );
    let Ok(Op::Getxattr { name, size }) = decode(&r, &mut sink) else {
        panic!("not a getxattr")
    };
    assert_eq!((name, size), (OsStr::new("user.mshare.attach"), 256));
    // fuse_setxattr_in: size = 3, flags = XATTR_CREATE (1).
    let r = req(op::SETXATTR, &[3, 0, 0, 0, 1, 0, 0, 0], b"user.x\0thp!");
    let Ok(Op::Setxattr { name, value, flags }) = decode(&r, &mut sink) else {
        panic!("not a setxattr")
    };
    assert_eq!((name, value, flags), (OsStr::new("user.x"), &b"thp"[..], 1));
    let r = req(op::SETXATTR, &[9, 0, 0, 0, 0, 0, 0, 0], b"user.x\0thp");
    assert_eq!(decode(&r, &mut sink).err().unwrap().errno, Errno::EINVAL);
}

#[test]
fn readdir_fills_the_sink_up_to_its_size() {
    // fuse_read_in: fh = 4, offset = 2, size = 4096.
    let mut b = [0u8; 40];
    b[0] = 4;
    b[8] = 2;
    b[17] = 0x10;
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let r = req(op::READDIR, &b, &[]);
    assert_eq!(readdir_limit(&r), 4096);
    assert!(matches!(
        decode(&r, &mut sink),
        Ok(Op::Readdir {
            fh: Fh(4),
            offset: 2,
            ..
        })
    ));
    assert_eq!(readdir_limit(&req(op::READ, &b, &[])), 0);
}

#[test]
fn malformed_requests_are_einval_and_unknown_ones_enosys() {
    let mut sink = |_: crate::request::DirEntry<'_>| true;
    let cases: [(u32, &[u8], &[u8]); 5] = [
        (op::LOOKUP, &[], b"no-nul"),
        (op::RENAME, &[1, 0, 0, 0, 0, 0, 0, 0], b"only\0"),
        (op::OPEN, &[0, 0, 0], &[]),
        (op::SETATTR, &[0; 87], &[]),
        (op::FALLOCATE, &[0; 31], &[]),
    ];
    for (opcode, opb, payload) in cases {
        let r = req(opcode, opb, payload);
        let e = decode(&r, &mut sink).err().expect("malformed");
        assert_eq!(e.errno, Errno::EINVAL, "opcode {opcode}");
    }
    // FUSE_GETLK (31), FUSE_BMAP (37): not implemented.
    for opcode in [31, 37, 0, 9999] {
        let r = req(opcode, &[0; 64], &[]);
        assert_eq!(decode(&r, &mut sink).err().unwrap().errno, Errno::ENOSYS);
    }
}

/// Every request the handler serves, except `forget` (which the kernel
/// sends only through `/dev/fuse`), has an opcode the decoder reads.
#[test]
fn the_decoder_covers_every_op() {
    let all = [
        op::LOOKUP,
        op::GETATTR,
        op::SETATTR,
        op::SYMLINK,
        op::MKNOD,
        op::MKDIR,
        op::UNLINK,
        op::RMDIR,
        op::RENAME,
        op::LINK,
        op::OPEN,
        op::READ,
        op::WRITE,
        op::STATFS,
        op::RELEASE,
        op::FSYNC,
        op::SETXATTR,
        op::GETXATTR,
        op::LISTXATTR,
        op::REMOVEXATTR,
        op::OPENDIR,
        op::READDIR,
        op::RELEASEDIR,
        op::CREATE,
        op::DESTROY,
        op::IOCTL,
        op::FALLOCATE,
        op::RENAME2,
    ];
    let big = [0u8; 128];
    let mut names: Vec<&str> = all
        .iter()
        .map(|&o| {
            let mut sink = |_: crate::request::DirEntry<'_>| true;
            let r = req(o, &big, b"a\0b\0");
            decode(&r, &mut sink).expect("decodes").name()
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    // 28 opcodes; RENAME and RENAME2 are one request: 27 of the 28 Ops.
    assert_eq!(names.len(), 27, "{names:?}");
    assert!(!names.contains(&"forget"));
}
