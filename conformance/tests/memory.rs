//! The kit against the memory reference backend.

ff_conformance::suite!(|| async { ff_conformance::memory_fixture() });
