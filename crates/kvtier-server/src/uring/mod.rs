//! The io_uring backend (placeholder while it is being written).
use std::io;
use std::sync::Arc;

use crate::runtime::Shared;
use crate::service::Service;

pub(crate) fn probe() -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "not built yet"))
}

pub(crate) struct UringLoop<S: Service>(Arc<Shared<S>>);

impl<S: Service> UringLoop<S> {
    pub(crate) fn new(
        _shared: Arc<Shared<S>>,
        _index: usize,
        _listeners: Vec<std::net::TcpListener>,
    ) -> io::Result<Self> {
        probe().map(|()| unreachable!())
    }
    pub(crate) fn run(self) -> io::Result<()> {
        drop(self.0);
        Ok(())
    }
}
