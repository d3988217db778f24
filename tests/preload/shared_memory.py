"""A multiprocessing.shared_memory user that knows nothing of msharefs.

Run under `msharectl run` with the mount as argv[1]: prints where its
SharedMemory is mapped and what a forked child wrote into it.
"""
import multiprocessing as mp
import os
import sys
from multiprocessing import shared_memory

mount = sys.argv[1]


def mapped_from(name):
    want = os.path.join(mount, "shm", name.lstrip("/"))
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(want) for line in f)


def child(name, q):
    t = shared_memory.SharedMemory(name=name)
    t.buf[:5] = b"child"
    q.put(mapped_from(name))
    t.close()


if __name__ == "__main__":
    mp.set_start_method("fork")
    s = shared_memory.SharedMemory(create=True, size=10000)
    print("parent maps the region:", mapped_from(s.name))
    print("listed:", s.name.lstrip("/") in os.listdir(os.path.join(mount, "shm")))
    q = mp.Queue()
    p = mp.Process(target=child, args=(s.name, q))
    p.start()
    print("child maps the region:", q.get())
    p.join()
    print("child wrote:", bytes(s.buf[:5]).decode())
    s.close()
    s.unlink()
    print("unlinked:", s.name.lstrip("/") not in os.listdir(os.path.join(mount, "shm")))
