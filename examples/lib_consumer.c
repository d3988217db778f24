/*
 * Attaches a region with libmshare (read-only) and checks every 4 KiB page
 * against what lib_donor wrote. Prints "ok" (or what is wrong) on one line.
 * --hold keeps the mapping until the process is killed; --no-map opens the
 * region but does not map it (a baseline for measurements); --attach maps
 * it with mshare_attach, without opening the region file.
 *
 *   cc lib_consumer.c $(pkg-config --cflags --libs mshare) -o lib_consumer
 *   lib_consumer [--hold] [--no-map] [--attach] [NAME]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mshare.h>

int main(int argc, char **argv)
{
	const char *name = "sga";
	int hold = 0, map = 1, attach = 0;
	struct mshare_info info;
	struct mshare_region *r;
	const volatile uint64_t *p;
	uint64_t bad = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--hold"))
			hold = 1;
		else if (!strcmp(argv[i], "--no-map"))
			map = 0;
		else if (!strcmp(argv[i], "--attach"))
			attach = 1;
		else
			name = argv[i];
	}
	if (attach) {
		uint64_t size;

		p = mshare_attach(NULL, name, 1, &size);
		if (!p) {
			printf("error: %s (errno %d)\n", mshare_strerror(), errno);
			return 1;
		}
		for (uint64_t i = 0; i < size / 4096; i++)
			if (p[i * 512] != i)
				bad++;
		printf(bad ? "bad: %llu pages\n" : "ok\n", (unsigned long long)bad);
		munmap((void *)p, size);
		return bad != 0;
	}
	r = mshare_open(NULL, name, 1);
	if (!r || mshare_get_info(r, &info)) {
		printf("error: %s (errno %d)\n", mshare_strerror(), errno);
		return 1;
	}
	if (map) {
		p = mshare_map(r);
		if (!p) {
			printf("error: %s (errno %d)\n", mshare_strerror(), errno);
			return 1;
		}
		for (uint64_t i = 0; i < info.size / 4096; i++)
			if (p[i * 512] != i)
				bad++;
	}
	if (bad)
		printf("bad: %llu pages\n", (unsigned long long)bad);
	else
		printf("ok\n");
	fflush(stdout);
	while (hold)
		pause();
	mshare_close(r);
	return bad != 0;
}
