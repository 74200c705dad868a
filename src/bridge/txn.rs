//! The leader work in `transactional` delivery: binlog -> Kafka transactions
//! (data + progress record) -> fenced etcd checkpoint.
//!
//! The protocol itself lives in [`crate::sink::txn`] (unit-tested against a
//! scripted producer); this file wires it to the source, the sink and the
//! checkpoint writer. Invariants enforced here:
//! 1. The etcd checkpoint is given only positions returned by a successful
//!    commit (each is the progress record of that commit).
//! 2. On lease loss the open transaction is aborted and nothing more is
//!    checkpointed; the pipeline also drops this future, and an unfinished
//!    transaction is aborted by the next leader's `init_transactions`.
//! 3. Fenced / fatal producer: no abort, no checkpoint, step down.
//! 4. No fence delay: `init_transactions` fences the old leader's producer.

use std::time::Duration;

use super::*;
use crate::sink::routing::render_topic;
use crate::sink::txn::{TxnDriver, TxnLimits};
use crate::sink::txn_kafka::{ensure_progress_topic, RdTxn};

fn txn_failed(e: TxnError) -> WorkError {
    if matches!(e, TxnError::Fenced(_)) {
        tracing::error!(error = %e, "fenced by a newer leader's producer: stepping down, no checkpoint");
    }
    failed(e)
}

impl Bridge {
    pub(super) async fn run_transactional(&self, ctx: LeaderContext) -> Result<(), WorkError> {
        let pipeline = &self.config.etcd.pipeline;
        let mysql = &self.config.mysql;
        let mut kafka = self.config.kafka.clone();
        let txn_id = kafka.transactional_id_for(pipeline);
        kafka
            .properties
            .insert("transactional.id".into(), txn_id.clone());
        let progress_topic = render_topic(&kafka.progress_topic, "", "", pipeline);
        if kafka.create_topics {
            ensure_progress_topic(&kafka, &progress_topic)
                .await
                .map_err(failed)?;
        }
        let mut sink = KafkaSink::new(&kafka, pipeline, ctx.epoch)
            .await
            .map_err(failed)?
            .with_filter(TableFilter::new(&mysql.include, &mysql.exclude));
        // With create_topics = false this names the missing progress topic.
        sink.ensure_topic(&progress_topic).await.map_err(failed)?;
        let session = ctx.session();
        sink.set_deadline_fn(move || session.deadline());
        let limits = TxnLimits {
            max_messages: kafka.transaction_max_messages,
            max_bytes: kafka.transaction_max_bytes,
            max_time: Duration::from_millis(kafka.transaction_max_ms),
        };
        let ops = RdTxn::new(
            sink.producer().inner().clone(),
            &kafka,
            &progress_topic,
            pipeline,
            ctx.epoch,
        );
        let mut driver = TxnDriver::new(ops, limits);

        // Fence the previous leader, then resume from the later of the etcd
        // checkpoint and the last committed progress record.
        let started = std::time::Instant::now();
        let checkpoint = ctx.resume.as_ref().map(|c| c.position.clone());
        let resume = tokio::select! {
            biased;
            _ = ctx.lost().cancelled() => return Err(WorkError::SessionLost),
            r = driver.takeover(checkpoint.as_ref()) => r.map_err(txn_failed)?,
        };
        tracing::info!(
            transactional_id = %txn_id,
            progress_topic = %progress_topic,
            checkpoint = %checkpoint.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "none".into()),
            resume = %resume.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "none (mysql.start)".into()),
            took_ms = started.elapsed().as_millis() as u64,
            "transactional takeover: previous producer fenced"
        );
        let from = match &resume {
            Some(p) => StartFrom::Position(p.clone()),
            None => self.start_from(&ctx)?,
        };
        let source = BinlogSource::start(mysql, SourceOptions::default(), from.clone())
            .await
            .map_err(failed)?;
        ctx.checkpoint
            .set_extra(CLEAN_STOP, serde_json::Value::Bool(false))
            .await;
        if let Some(p) = resume.clone().or_else(|| source.position()) {
            ctx.checkpoint.acked(&p).await?;
        }
        ctx.checkpoint.flush().await?;
        tracing::info!(epoch = ctx.epoch, from = ?from, "streaming (transactional)");

        let (mut feed, _abort_reader) = self.spawn_reader(source);
        self.ops.update(|s| {
            s.streaming = true;
            s.reason = None;
        });
        let mut counts = Counts::default();
        let mut last: Option<(Position, u64)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(
            (kafka.transaction_max_ms / 2).clamp(5, 500),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let result: Result<(), WorkError> = loop {
            let ev = match feed.ready() {
                Some(ev) => Some(ev),
                None => tokio::select! {
                    biased;
                    _ = ctx.lost().cancelled() => {
                        driver.lease_lost().await;
                        sink.abort();
                        break Err(WorkError::SessionLost);
                    }
                    _ = ctx.stop().cancelled() => break Ok(()),
                    _ = tick.tick() => {
                        self.publish(&mut counts, &sink, last.as_ref());
                        if driver.due() {
                            if let Err(e) = self.commit(&ctx, &mut driver, &mut sink).await {
                                break Err(e);
                            }
                        }
                        continue;
                    }
                    ev = feed.next() => ev,
                },
            };
            let ev = match received(ev) {
                Ok(ev) => ev,
                Err(e) => break Err(e),
            };
            counts.count(&ev);
            last = Some((ev.position.clone(), ev.txn.ts_ms));
            if let Err(e) = driver.before_send() {
                break Err(txn_failed(e));
            }
            let (m0, b0) = sink.sent_totals();
            if let Err(e) = sink.send(&ev).await {
                let e = driver.fail(TxnError::Abortable(e.to_string())).await;
                self.ops.metrics.kafka_delivery_errors.inc();
                break Err(txn_failed(e));
            }
            let (m1, b1) = sink.sent_totals();
            if let Some(p) = sink.handed_over_position() {
                driver.sent(p, m1 - m0, b1 - b0);
            }
            if driver.due() {
                if let Err(e) = self.commit(&ctx, &mut driver, &mut sink).await {
                    break Err(e);
                }
            }
        };
        self.publish(&mut counts, &sink, last.as_ref());
        self.ops.update(|s| {
            s.streaming = false;
            s.reason = Some("leader: stopping".into());
        });
        if let Err(e) = result {
            if driver.is_open() {
                let _ = driver.fail(TxnError::Abortable(e.to_string())).await;
            }
            sink.abort();
            return Err(e);
        }
        // Graceful stop: the held Maxwell row (if any) and the open batch go
        // into one last transaction; then the final checkpoint.
        if let Err(e) = driver.before_send() {
            return Err(txn_failed(e));
        }
        let (m0, b0) = sink.sent_totals();
        if let Err(e) = sink.flush(FLUSH_TIMEOUT).await {
            let e = driver.fail(TxnError::Abortable(e.to_string())).await;
            return Err(txn_failed(e));
        }
        let (m1, b1) = sink.sent_totals();
        if let Some(p) = sink.handed_over_position() {
            driver.sent(p, m1 - m0, b1 - b0);
        }
        self.commit(&ctx, &mut driver, &mut sink).await?;
        ctx.checkpoint
            .set_extra(CLEAN_STOP, serde_json::Value::Bool(true))
            .await;
        tracing::info!(
            batches = driver.commits(),
            "transactional leader stopped cleanly"
        );
        Ok(())
    }

    /// Commit the open batch (lease checked right before), then give its
    /// position to the checkpoint writer (invariant 1).
    async fn commit(
        &self,
        ctx: &LeaderContext,
        driver: &mut TxnDriver<RdTxn>,
        sink: &mut KafkaSink,
    ) -> Result<(), WorkError> {
        let started = std::time::Instant::now();
        let committed = driver.commit(ctx.may_send()).await.map_err(txn_failed)?;
        let Some(p) = committed else {
            return Ok(());
        };
        let commit_took = started.elapsed();
        // Every delivery report is in after the commit's flush.
        sink.settle(FLUSH_TIMEOUT).await.map_err(failed)?;
        tracing::debug!(
            commit_ms = commit_took.as_secs_f64() * 1e3,
            settle_ms = (started.elapsed() - commit_took).as_secs_f64() * 1e3,
            position = %p,
            "Kafka transaction committed"
        );
        self.ops.metrics.kafka_transactions.inc();
        if ctx.checkpoint.acked(&p).await? {
            self.ops.metrics.checkpoint_unix.set(crate::ops::unix_now());
            self.ops.update(|s| s.checkpoint = Some(p.to_string()));
        }
        Ok(())
    }
}
