/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * mshare.h - msharefs user API.
 *
 * The kernel-style ABI (RFC v3 uapi): ioctls on a region file in an
 * msharefs mount. Its one definition is the Rust crate mshare-uapi
 * (uapi/ in the source tree); the test suite compiles this header and
 * checks every item against it.
 */
#ifndef MSHARE_H
#define MSHARE_H

#include <linux/ioctl.h>
#include <linux/types.h>
#include <stdint.h>

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

/*
 * msharefs extension: size a new region and, with MSHARE_SETUP_OBJECT, map
 * one read-write anonymous object over all of it, in one call instead of
 * ftruncate (or MSHAREFS_SET_SIZE) + MSHAREFS_GET_SIZE + MSHAREFS_CREATE_MAPPING.
 * In: start (0: the server chooses), size, flags. Out: the start in force.
 */
struct mshare_setup {
	__u64 start;
	__u64 size;
	__u64 flags;		/* MSHARE_SETUP_* */
};

#define MSHARE_SETUP_OBJECT	1
#define MSHAREFS_SETUP		_IOWR('x', 33, struct mshare_setup)

/*
 * msharefs extension: the caller has unmapped a region of MSHARE_ANON_DIR; the
 * server looks for processes that still map it and removes it when none does.
 */
#define MSHAREFS_UNMAPPED	_IO('x', 34)

/* Directories of the root: anonymous shared memory and POSIX shm objects. */
#define MSHARE_ANON_DIR		"anon"
#define MSHARE_SHM_DIR		"shm"

/* Extended attribute naming a region's backing: "thp", "shmem", "hugetlb". */
#define MSHARE_BACKING_XATTR	"user.mshare.backing"
/*
 * Extended attribute of a sized region: what an attach needs, without an
 * open of the region file. "start=0x<hex> size=<decimal> backing=<kind>
 * path=<memory file>", the path running to the end of the value (empty when
 * the server keeps no memory files: not run as root). Reading it needs read
 * permission on the region. The memory file carries the region's owner,
 * group and mode; its name changes whenever a chmod, chown, rename or
 * removal changes who may reach the region, so a learned name stops
 * working exactly then. Open it O_RDONLY or O_RDWR, mmap it MAP_SHARED at
 * start, close it. (Replaces MSHAREFS_GET_TOKEN, number 32, and its broker
 * socket, which servers no longer have: they answer ENOTTY.)
 */
#define MSHARE_ATTACH_XATTR	"user.mshare.attach"
/* Extended attribute of a region: "MAJ:MIN INO" of its memory, as /proc/PID/maps writes them. */
#define MSHARE_MEMORY_XATTR	"user.mshare.memory"
/* Extended attributes of the mount's root: the hugetlb pool the server manages
 * ("policy=auto max_pages=N ours=N"), and a size that root sets to grow it now. */
#define MSHARE_POOL_XATTR	"user.mshare.hugetlb_pool"
#define MSHARE_RESERVE_XATTR	"user.mshare.hugetlb_reserve"

/*
 * The library (link with `pkg-config --libs mshare`).
 *
 * Functions returning int give 0 on success and -1 with errno set on
 * failure; functions returning a pointer give NULL with errno set.
 * mshare_strerror() describes the calling thread's last failure. A `dir` of
 * NULL finds the mount: $MSHARE_DIR, else the first fuse.msharefs mount in
 * /proc/self/mountinfo, else /run/mshare.
 */

struct mshare_region;	/* an open region file (and its mapping) */

#define MSHARE_BACKING_DEFAULT	0	/* the mount's backing= */
#define MSHARE_BACKING_THP	1	/* 2 MiB transparent huge pages */
#define MSHARE_BACKING_SHMEM	2	/* 4 KiB pages */
#define MSHARE_BACKING_HUGETLB	3	/* 2 MiB hugetlb pages, shared page tables */

#define MSHARE_EXCL		1	/* fail with EEXIST if the region exists */
#define MSHARE_NO_OBJECT	2	/* do not create one object over the region */

struct mshare_options {
	uint32_t backing;	/* MSHARE_BACKING_* */
	uint32_t mode;		/* permission bits; 0 means 0600 */
	uint32_t flags;		/* MSHARE_EXCL, MSHARE_NO_OBJECT */
};

/* The mount's alignment (what mshare_info holds), or -1. */
long long mshare_alignment(const char *dir);

/*
 * Creates region `name` of `size` bytes at `start` (0: the server chooses a
 * free aligned start) and, unless MSHARE_NO_OBJECT, one anonymous object
 * over all of it. opts NULL: default backing, 0600, MSHARE_EXCL.
 */
struct mshare_region *mshare_create(const char *dir, const char *name,
				    uint64_t start, uint64_t size,
				    const struct mshare_options *opts);

/* Opens region `name`; read_only gives a read-only mapping. */
struct mshare_region *mshare_open(const char *dir, const char *name, int read_only);

/*
 * Maps region `name` at its start without opening the region file (its
 * MSHARE_ATTACH_XATTR, an open of the memory file, mmap, close): the
 * fastest attach. Stores the region's size in *size (if size is not NULL);
 * unmap with munmap(addr, size). NULL with errno EEXIST if the address
 * range is in use, EACCES if the region's mode refuses the access asked.
 */
void *mshare_attach(const char *dir, const char *name, int read_only, uint64_t *size);

/* MSHAREFS_GET_SIZE. */
int mshare_get_info(const struct mshare_region *r, struct mshare_info *info);

/* MSHAREFS_CREATE_MAPPING with the caller's struct. */
int mshare_create_mapping(const struct mshare_region *r, const struct mshare_create *c);

/* MSHAREFS_UNMAP. */
int mshare_unmap_range(const struct mshare_region *r, uint64_t addr, uint64_t size);

/*
 * Maps the whole region at its start by mapping its backing file directly:
 * works for every backing and is the only way for hugetlb. EEXIST if the
 * address range is in use. Returns the start (again, if already mapped).
 */
void *mshare_map(struct mshare_region *r);

/* Unmaps what mshare_map mapped. */
int mshare_detach(struct mshare_region *r);

/* The region file's descriptor (owned by r). */
int mshare_fd(const struct mshare_region *r);

/* Unmaps (if mapped) and closes; r is freed. */
int mshare_close(struct mshare_region *r);

/* Removes region `name`; memory goes with the last mapping. */
int mshare_remove(const char *dir, const char *name);

/* The calling thread's last failure, in words. */
const char *mshare_strerror(void);

#ifdef __cplusplus
}
#endif

#endif /* MSHARE_H */
