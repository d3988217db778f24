/*
 * hold REGION READY STOP: maps REGION of $MSHARE_DIR through libmshare,
 * reads its first 2 MiB, creates the file READY, and keeps the mapping
 * until the file STOP exists. A mapper for tests/scripts/operator.sh.
 */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <mshare.h>

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: hold REGION READY STOP\n");
		return 2;
	}
	struct mshare_region *r = mshare_open(NULL, argv[1], 1);
	const volatile char *p = r ? mshare_map(r) : NULL;
	if (!p) {
		fprintf(stderr, "hold: %s: %s\n", argv[1], mshare_strerror());
		return 1;
	}
	unsigned sum = 0;
	for (unsigned long off = 0; off < (2UL << 20); off += 4096)
		sum += p[off];
	int fd = open(argv[2], O_CREAT | O_WRONLY, 0644);
	if (fd < 0 || dprintf(fd, "%u\n", sum) < 0 || close(fd) < 0)
		return 1;
	while (access(argv[3], F_OK) != 0)
		usleep(20000);
	return 0;
}
