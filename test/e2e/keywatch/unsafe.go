package main

import "unsafe"

// unsafePointer reads an inotify event header in place, as the kernel wrote it.
func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }
