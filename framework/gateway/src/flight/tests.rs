//! Flight SQL's sessions and errors through arrow-flight's own client, on
//! a real gateway with in-process executors.

use std::sync::Arc;

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use futures::TryStreamExt;
use strata_framework::driver::Driver;
use tonic::transport::Channel;

use crate::GatewayHandle;

async fn gateway(dir: &std::path::Path, token: Option<&str>) -> (Arc<Driver>, GatewayHandle) {
    crate::tests::gateway_with(dir, |gw| {
        gw.flight_listen = Some("127.0.0.1:0".parse().unwrap());
        gw.token = token.map(str::to_owned);
    })
    .await
}

async fn client(handle: &GatewayHandle) -> FlightSqlServiceClient<Channel> {
    let addr = handle.flight_addr().unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// The rows of `sql`, through GetFlightInfo and DoGet.
async fn query(
    c: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = c
        .execute(sql.to_owned(), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.unwrap();
        let stream = c.do_get(ticket).await.map_err(|e| e.to_string())?;
        out.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

fn only_text(batches: &[RecordBatch]) -> String {
    let column = batches[0].column(0);
    let column =
        datafusion::arrow::compute::cast(column, &datafusion::arrow::datatypes::DataType::Utf8)
            .unwrap();
    column.as_string::<i32>().value(0).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_keeps_its_session_and_bad_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, handle) = gateway(dir.path(), Some("t0k")).await;

    // No credentials, a wrong password, an unknown bearer: refused.
    let mut anonymous = client(&handle).await;
    let err = query(&mut anonymous, "select 1").await.unwrap_err();
    assert!(err.contains("authenticate"), "{err}");
    let err = anonymous.handshake("ann", "wrong").await.unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    anonymous.set_token("forged".to_owned());
    let err = query(&mut anonymous, "select 1").await.unwrap_err();
    assert!(err.contains("unknown or expired session token"), "{err}");

    // The handshake gives a session token: a SET holds across calls.
    let mut ann = client(&handle).await;
    ann.handshake("ann", "t0k").await.unwrap();
    let session_token = ann.token().cloned().unwrap();
    assert_ne!(session_token, "t0k");
    ann.execute_update("SET application_name = 'ann-app'".to_owned(), None)
        .await
        .unwrap();
    let shown = query(&mut ann, "show application_name").await.unwrap();
    assert_eq!(only_text(&shown), "ann-app");

    // The cluster's token as a bearer is a session of its own.
    let mut bob = client(&handle).await;
    bob.set_token("t0k".to_owned());
    let shown = query(&mut bob, "show application_name").await.unwrap();
    assert_eq!(only_text(&shown), "flight sql");
    assert_eq!(
        only_text(&query(&mut bob, "select 40 + 2").await.unwrap()),
        "42"
    );

    // Errors carry their SQLSTATE; the session goes on.
    let err = query(&mut ann, "select * from nope").await.unwrap_err();
    assert!(err.contains("42P01"), "{err}");
    let err = query(&mut ann, "select 1; select 2").await.unwrap_err();
    assert!(err.contains("one SQL statement"), "{err}");
    assert_eq!(
        only_text(&query(&mut ann, "show application_name").await.unwrap()),
        "ann-app"
    );

    // A ticket is fetched once.
    let info = ann.execute("select 7".to_owned(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let first = ann.do_get(ticket.clone()).await.unwrap();
    let rows: Vec<RecordBatch> = first.try_collect().await.unwrap();
    assert_eq!(rows[0].column(0).len(), 1);
    let again = match ann.do_get(ticket).await {
        Ok(s) => s
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(again.unwrap_err().contains("no such query ticket"));

    handle.shutdown().await;
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_every_call_is_trusted_and_prepared_statements_bind() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, handle) = gateway(dir.path(), None).await;
    let mut c = client(&handle).await;
    assert_eq!(
        only_text(&query(&mut c, "select 'hi'").await.unwrap()),
        "hi"
    );

    let mut prepared = c
        .prepare("select $1::int8 * 2 as doubled".to_owned(), None)
        .await
        .unwrap();
    assert_eq!(
        prepared.dataset_schema().unwrap().field(0).name(),
        "doubled"
    );
    let schema = Arc::new(prepared.parameter_schema().unwrap().clone());
    let params = RecordBatch::try_new(
        schema,
        vec![Arc::new(datafusion::arrow::array::Int64Array::from(vec![
            21,
        ]))],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let stream = c
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let rows: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!(only_text(&rows), "42");
    prepared.close().await.unwrap();

    handle.shutdown().await;
    driver.shutdown().await;
}
