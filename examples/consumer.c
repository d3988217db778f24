/*
 * The cover letter's consumer, as written there, with two changes: the mount
 * point comes from MSHARE_DIR (default /run/mshare), and the file is opened
 * O_RDWR. The letter opens it O_RDONLY and then maps it PROT_WRITE |
 * MAP_SHARED, which the VFS refuses with EACCES on every Linux file system
 * before the file system is asked.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mshare.h>

static char path[4096];

static const char *at(const char *name)
{
	const char *dir = getenv("MSHARE_DIR");
	snprintf(path, sizeof(path), "%s/%s", dir ? dir : "/run/mshare", name);
	return path;
}

int main(void)
{
	struct mshare_info minfo;
	char *addr;
	int fd, ret;

	fd = open(at("shareme"), O_RDWR);
	ret = ioctl(fd, MSHAREFS_GET_SIZE, &minfo);
	if (ret < 0) perror("ERROR: MSHAREFS_GET_SIZE");
	if (!minfo.start) perror("ERROR: mshare region not init'd");
	addr = mmap((void *)minfo.start, minfo.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED) { perror("ERROR: mmap failed"); return 1; }
	printf("Guest mmap at %p:\n", addr);
	printf("%s\n", addr);
	printf("\nDone\n");
	return 0;
}
