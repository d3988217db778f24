/*
 * Creates a region with libmshare and fills it: by default a 1 GiB hugetlb
 * region named "sga" at a start the server chooses. Every 4 KiB page starts
 * with its index, so consumers can check what they see.
 *
 *   cc lib_donor.c $(pkg-config --cflags --libs mshare) -o lib_donor
 *   lib_donor [NAME [SIZE_MIB [thp|shmem|hugetlb]]]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mshare.h>

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "sga";
	uint64_t size = (argc > 2 ? strtoull(argv[2], NULL, 0) : 1024) << 20;
	const char *kind = argc > 3 ? argv[3] : "hugetlb";
	struct mshare_options opts = { .mode = 0644, .flags = MSHARE_EXCL };
	struct mshare_info info;
	struct mshare_region *r;
	uint64_t *p;

	if (!strcmp(kind, "thp"))
		opts.backing = MSHARE_BACKING_THP;
	else if (!strcmp(kind, "shmem"))
		opts.backing = MSHARE_BACKING_SHMEM;
	else
		opts.backing = MSHARE_BACKING_HUGETLB;

	r = mshare_create(NULL, name, 0, size, &opts);
	if (!r) {
		fprintf(stderr, "lib_donor: %s (errno %d)\n", mshare_strerror(), errno);
		return 1;
	}
	p = mshare_map(r);
	if (!p || mshare_get_info(r, &info)) {
		fprintf(stderr, "lib_donor: %s\n", mshare_strerror());
		mshare_close(r);
		mshare_remove(NULL, name);
		return 1;
	}
	for (uint64_t i = 0; i < info.size / 4096; i++)
		p[i * 512] = i;
	printf("created %s: %llu MiB at %#llx\n", name,
	       (unsigned long long)(info.size >> 20), (unsigned long long)info.start);
	mshare_close(r);
	return 0;
}
