//! `keyward.v1.Master`: the master-key rewrap, streamed, and which master key
//! seals what.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::{
    Api, Reply,
    convert::master_status_pb,
    pb::{self, master_server::Master},
};
use crate::{
    Error,
    domain::access::Method,
    service::{
        Target,
        master::{DEFAULT_REWRAP_BATCH, MAX_REWRAP_BATCH, RewrapProgress},
    },
};

/// The rewrap's batch size: 0 takes the default.
fn batch_of(requested: u32) -> Result<usize, Error> {
    let batch = match requested {
        0 => DEFAULT_REWRAP_BATCH,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if batch > MAX_REWRAP_BATCH {
        return Err(Error::invalid(
            "batch_size",
            format!("must be at most {MAX_REWRAP_BATCH}"),
        ));
    }
    Ok(batch)
}

#[tonic::async_trait]
impl Master for Api {
    type RewrapStream = ReceiverStream<Result<pb::RewrapProgress, Status>>;

    async fn rewrap(&self, req: Request<pb::RewrapRequest>) -> Reply<Self::RewrapStream> {
        let target = |_: &pb::RewrapRequest| Target::None;
        self.call(req, Method::Rewrap, target, |r| async move {
            let batch = batch_of(r.batch_size)?;
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let service = Arc::clone(&self.service);
            // The rewrap runs to its end even if the caller goes away: every
            // batch it commits is whole, and what it leaves a rerun finishes.
            tokio::spawn(async move {
                let progress_tx = tx.clone();
                let mut progress = move |p: RewrapProgress| {
                    // Progress is advisory: a slow reader misses some.
                    let _ = progress_tx.try_send(Ok(pb::RewrapProgress {
                        table: p.table.as_str().to_string(),
                        resealed: p.resealed,
                        total: p.total,
                        ..Default::default()
                    }));
                };
                let pause = std::time::Duration::from_millis(u64::from(r.pause_millis));
                let last = match service.rewrap(batch, pause, &mut progress).await {
                    Ok(outcome) => Ok(pb::RewrapProgress {
                        table: String::new(),
                        resealed: outcome.resealed,
                        total: outcome.resealed,
                        done: true,
                        skipped: outcome.skipped,
                        status: Some(master_status_pb(outcome.status)),
                    }),
                    Err(err) => Err(Status::from(err)),
                };
                let _ = tx.send(last).await;
            });
            Ok(ReceiverStream::new(rx))
        })
        .await
    }

    async fn get_master_status(
        &self,
        req: Request<pb::GetMasterStatusRequest>,
    ) -> Reply<pb::MasterStatus> {
        let target = |_: &pb::GetMasterStatusRequest| Target::None;
        self.call(req, Method::GetMasterStatus, target, |_| async move {
            Ok(master_status_pb(self.service.master_status().await?))
        })
        .await
    }
}
