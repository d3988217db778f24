/*
 * The cover letter's donor, as written there; only the paths differ: the
 * mount point comes from MSHARE_DIR (default /run/mshare).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	struct mshare_create mcreate;
	char req[128] = { 0 };
	unsigned long alignsize, start, size;
	char *addr;
	int fd, ret;

	fd = open(at("mshare_info"), O_RDONLY);
	read(fd, req, 128);
	alignsize = atoi(req);
	close(fd);
	fd = open(at("shareme"), O_RDWR|O_CREAT|O_EXCL, 0600);
	start = alignsize * 4;
	size = alignsize * 2;
	minfo.start = start;
	minfo.size = size;
	ret = ioctl(fd, MSHAREFS_SET_SIZE, &minfo);
	if (ret < 0) perror("ERROR: MSHAREFS_SET_SIZE");
	mcreate.addr = start;
	mcreate.size = size;
	mcreate.offset = 0;
	mcreate.prot = PROT_READ | PROT_WRITE;
	mcreate.flags = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;
	mcreate.fd = -1;
	ret = ioctl(fd, MSHAREFS_CREATE_MAPPING, &mcreate);
	if (ret < 0) perror("ERROR: MSHAREFS_CREATE_MAPPING");
	addr = mmap((void *)start, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED) perror("ERROR: mmap failed");
	strncpy(addr, "Some random shared text", sizeof("Some random shared text"));
	printf("Donor mmap at %p: %s\n", addr, addr);
	return 0;
}
