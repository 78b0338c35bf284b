//! Build and test glue for `riptides.ko`; the C module arrives with the kernel-module issue.
