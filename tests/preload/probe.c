/*
 * A program written for plain POSIX shared memory, knowing nothing of
 * msharefs: the preload tests run it under `msharectl run` and check what
 * it sees (its own checks: exit status 0) and what the mount shows.
 *
 *   probe anon SIZE          map, fork a child that reads and writes, check
 *   probe hold SIZE N        map, fork N children that keep it mapped, print
 *                            "ready ADDR" and every pid, wait for stdin EOF
 *   probe unmap SIZE         map, munmap, print "unmapped", wait for EOF
 *   probe private SIZE       MAP_PRIVATE|MAP_ANONYMOUS (never taken over)
 *   probe fixed SIZE         MAP_SHARED|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE
 *   probe resize SIZE        mremap shrink and move; madvise(DONTNEED)
 *   probe threads N          N threads map and unmap while one forks
 *   probe exec SIZE          map, then exec `probe anon SIZE`
 *   probe shm NAME           shm_open and what follows, errnos, unlink
 *   probe shm-make NAME      make NAME (0600, 1000 bytes), close it, wait for EOF
 *   probe shm-open NAME      open NAME read-write: prints the errno name
 *   probe shm-unlink NAME
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "probe: %s:%d: %s failed (errno %s)\n", \
	__FILE__, __LINE__, #c, strerrorname_np(errno)); exit(1); } } while (0)

static size_t size_arg(const char *s)
{
	char *end;
	size_t n = strtoull(s, &end, 0);
	if (*end == 'M') n <<= 20;
	else if (*end == 'K') n <<= 10;
	else if (*end == 'G') n <<= 30;
	return n;
}

static char *map_anon(size_t size, int extra)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | extra, -1, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

static void wait_ok(pid_t pid)
{
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void wait_eof(void)
{
	char buf[64];
	while (read(0, buf, sizeof buf) > 0)
		;
}

/* Zero-filled, shared with a forked child both ways. */
static int anon(size_t size)
{
	char *p = map_anon(size, 0);
	CHECK(p[0] == 0 && p[size - 1] == 0);
	strcpy(p, "parent");
	pid_t pid = fork();
	if (pid == 0) {
		CHECK(strcmp(p, "parent") == 0);
		strcpy(p + size / 2, "child");
		_exit(0);
	}
	wait_ok(pid);
	CHECK(strcmp(p + size / 2, "child") == 0);
	printf("addr %p\n", (void *)p);
	CHECK(munmap(p, size) == 0);
	return 0;
}

static int hold(size_t size, int n)
{
	char *p = map_anon(size, 0);
	memset(p, 1, 4096);
	printf("ready %p\n", (void *)p);
	printf("pid %d\n", getpid());
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			CHECK(p[0] == 1);
			for (;;)
				pause();
		}
		printf("pid %d\n", pid);
	}
	fflush(stdout);
	wait_eof();
	return 0;
}

static int unmap(size_t size)
{
	char *p = map_anon(size, 0);
	p[0] = 1;
	CHECK(munmap(p, size) == 0);
	printf("unmapped\n");
	fflush(stdout);
	wait_eof();
	return 0;
}

static int private_map(size_t size)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	p[0] = 1;
	printf("addr %p\n", (void *)p);
	return 0;
}

static int fixed(size_t size)
{
	void *want = (void *)0x7e0000000000UL;
	char *p = mmap(want, size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(p == want);
	CHECK(p[0] == 0);
	p[0] = 1;
	printf("addr %p\n", (void *)p);
	return 0;
}

static int resize(size_t size)
{
	char *p = map_anon(size, 0);
	memset(p, 7, size);
	/* DONTNEED drops this process's view only: shared memory keeps it. */
	CHECK(madvise(p, size, MADV_DONTNEED) == 0);
	CHECK(p[size - 1] == 7);
	char *q = mremap(p, size, size / 2, MREMAP_MAYMOVE);
	CHECK(q != MAP_FAILED);
	CHECK(q[0] == 7 && q[size / 2 - 1] == 7);
	CHECK(munmap(q, size / 2) == 0);
	printf("resized\n");
	return 0;
}

static size_t thread_size;

static void *thread_main(void *arg)
{
	(void)arg;
	for (int i = 0; i < 8; i++) {
		char *p = map_anon(thread_size, 0);
		p[0] = (char)i;
		CHECK(p[0] == (char)i);
		CHECK(munmap(p, thread_size) == 0);
	}
	return NULL;
}

static int threads(int n)
{
	pthread_t t[64];
	thread_size = 4 << 20;
	for (int i = 0; i < n && i < 64; i++)
		CHECK(pthread_create(&t[i], NULL, thread_main, NULL) == 0);
	for (int i = 0; i < 4; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			char *p = map_anon(thread_size, 0);
			p[0] = 1;
			_exit(munmap(p, thread_size) != 0);
		}
		wait_ok(pid);
	}
	for (int i = 0; i < n && i < 64; i++)
		CHECK(pthread_join(t[i], NULL) == 0);
	printf("threads done\n");
	return 0;
}

static int shm(const char *name)
{
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0);
	CHECK(shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600) == -1 && errno == EEXIST);
	CHECK(ftruncate(fd, 1000) == 0);
	struct stat st;
	CHECK(fstat(fd, &st) == 0 && st.st_size == 1000);
	CHECK(posix_fallocate(fd, 0, 3 << 20) == 0);
	CHECK(fstat(fd, &st) == 0 && st.st_size == 3 << 20);
	/* At any address the kernel likes, twice, through two descriptors. */
	char *a = mmap(NULL, 3 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(a != MAP_FAILED);
	strcpy(a + 4096, "through the first");
	int fd2 = shm_open(name, O_RDWR, 0);
	CHECK(fd2 >= 0);
	char *b = mmap(NULL, 3 << 20, PROT_READ, MAP_SHARED, fd2, 0);
	CHECK(b != MAP_FAILED && strcmp(b + 4096, "through the first") == 0);
	pid_t pid = fork();
	if (pid == 0) {
		int c = shm_open(name, O_RDWR, 0);
		CHECK(c >= 0);
		char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, c, 0);
		CHECK(m != MAP_FAILED && strcmp(m + 4096, "through the first") == 0);
		strcpy(m, "child");
		_exit(0);
	}
	wait_ok(pid);
	CHECK(strcmp(a, "child") == 0);
	CHECK(fchmod(fd, 0640) == 0);
	CHECK(fstat(fd, &st) == 0 && (st.st_mode & 0777) == 0640);
	/* O_TRUNC empties it. */
	int t = shm_open(name, O_RDWR | O_TRUNC, 0);
	CHECK(t >= 0 && fstat(t, &st) == 0 && st.st_size == 0);
	CHECK(close(t) == 0 && close(fd2) == 0 && close(fd) == 0);
	CHECK(shm_unlink(name) == 0);
	CHECK(shm_open(name, O_RDWR, 0) == -1 && errno == ENOENT);
	CHECK(shm_unlink(name) == -1 && errno == ENOENT);
	CHECK(shm_open("/a/b", O_RDWR | O_CREAT, 0600) == -1 && errno == EINVAL);
	printf("shm ok\n");
	return 0;
}

static int shm_make(const char *name)
{
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0 && ftruncate(fd, 1000) == 0);
	CHECK(close(fd) == 0);
	printf("made\n");
	fflush(stdout);
	wait_eof();
	return 0;
}

static int shm_try(const char *name)
{
	int fd = shm_open(name, O_RDWR, 0);
	printf("%s\n", fd >= 0 ? "opened" : strerrorname_np(errno));
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) {
		fprintf(stderr, "usage: probe MODE ARG [N]\n");
		return 2;
	}
	const char *mode = argv[1];
	if (!strcmp(mode, "anon"))
		return anon(size_arg(argv[2]));
	if (!strcmp(mode, "hold"))
		return hold(size_arg(argv[2]), argc > 3 ? atoi(argv[3]) : 0);
	if (!strcmp(mode, "unmap"))
		return unmap(size_arg(argv[2]));
	if (!strcmp(mode, "private"))
		return private_map(size_arg(argv[2]));
	if (!strcmp(mode, "fixed"))
		return fixed(size_arg(argv[2]));
	if (!strcmp(mode, "resize"))
		return resize(size_arg(argv[2]));
	if (!strcmp(mode, "threads"))
		return threads(atoi(argv[2]));
	if (!strcmp(mode, "exec")) {
		char *p = map_anon(size_arg(argv[2]), 0);
		p[0] = 1;
		execl("/proc/self/exe", argv[0], "anon", argv[2], (char *)NULL);
		CHECK(0);
	}
	if (!strcmp(mode, "shm"))
		return shm(argv[2]);
	if (!strcmp(mode, "shm-make"))
		return shm_make(argv[2]);
	if (!strcmp(mode, "shm-open"))
		return shm_try(argv[2]);
	if (!strcmp(mode, "shm-unlink")) {
		CHECK(shm_unlink(argv[2]) == 0);
		return 0;
	}
	fprintf(stderr, "probe: unknown mode %s\n", mode);
	return 2;
}
