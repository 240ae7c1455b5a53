//! The fixture as a client sees it: what it does not serve says so, and it runs on its own.

use qdrant_client::{
    Qdrant,
    qdrant::{CreateCollectionBuilder, Distance, PointStruct, SetPayloadPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder},
};
use qdrant_fixture::QdrantFixture;

#[tokio::test(flavor = "multi_thread")]
async fn calls_it_does_not_serve_answer_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let q = QdrantFixture::start(dir.path()).await.unwrap();
    let client = Qdrant::from_url(&q.url()).skip_compatibility_check().build().unwrap();
    client.create_collection(CreateCollectionBuilder::new("c").vectors_config(VectorParamsBuilder::new(2, Distance::Cosine))).await.unwrap();
    client.upsert_points(UpsertPointsBuilder::new("c", vec![PointStruct::new(1, vec![1.0, 0.0], [("a", 1.into())])]).wait(true)).await.unwrap();
    let err = client.overwrite_payload(SetPayloadPointsBuilder::new("c", qdrant_client::Payload::try_from(serde_json::json!({"b": 2})).unwrap())).await.unwrap_err();
    let qdrant_client::QdrantError::ResponseError { status } = err else { panic!("{err}") };
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(status.message(), "qdrant-fixture does not serve Points.overwrite_payload");
    // set_payload by ids is served (soft delete); by filter it is not
    client
        .set_payload(
            SetPayloadPointsBuilder::new("c", qdrant_client::Payload::try_from(serde_json::json!({"b": 2})).unwrap())
                .points_selector(vec![qdrant_client::qdrant::PointId::from(1)])
                .wait(true),
        )
        .await
        .unwrap();
    let err = client
        .set_payload(
            SetPayloadPointsBuilder::new("c", qdrant_client::Payload::try_from(serde_json::json!({"b": 3})).unwrap()).points_selector(qdrant_client::qdrant::Filter::default()),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not serve set payload by filter"), "{err}");
    let err = client.create_collection(CreateCollectionBuilder::new("c").vectors_config(VectorParamsBuilder::new(2, Distance::Cosine))).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qdrant-fixture")).args(["--addr", &format!("127.0.0.1:{port}"), "--data"]).arg(dir.path()).spawn().unwrap();
    let client = Qdrant::from_url(&format!("http://127.0.0.1:{port}")).skip_compatibility_check().build().unwrap();
    let mut reply = None;
    for _ in 0..100 {
        if let Ok(r) = client.health_check().await {
            reply = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let reply = reply.expect("the fixture answered its health check");
    assert!(reply.title.contains("test fixture"), "{}", reply.title);
}
