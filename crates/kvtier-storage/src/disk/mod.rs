//! G3: block bytes on local disk (work in progress).
