/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * mshare.h - msharefs user API.
 *
 * The kernel-style ABI (RFC v3 uapi): ioctls on a region file in an
 * msharefs mount. The values match libmshare::abi, which the test suite
 * checks.
 */
#ifndef MSHARE_H
#define MSHARE_H

#include <linux/ioctl.h>
#include <linux/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Name of the file in the mount's root that holds the alignment. */
#define MSHARE_INFO_FILE "mshare_info"

struct mshare_info {
	__u64 start;
	__u64 size;
};

struct mshare_create {
	__u64 addr;
	__u64 size;
	__u64 offset;
	__u32 prot;
	__u32 flags;
	__u32 fd;
};

struct mshare_unmap {
	__u64 addr;
	__u64 size;
};

#define MSHAREFS_GET_SIZE	_IOR('x', 0, struct mshare_info)
#define MSHAREFS_SET_SIZE	_IOW('x', 1, struct mshare_info)
#define MSHAREFS_CREATE_MAPPING	_IOW('x', 2, struct mshare_create)
#define MSHAREFS_UNMAP		_IOW('x', 3, struct mshare_unmap)

#ifdef __cplusplus
}
#endif

#endif /* MSHARE_H */
