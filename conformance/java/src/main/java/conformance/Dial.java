package conformance;

import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.MetadataUtils;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * How the harness dials the sidecar for an app role: plaintext, or TLS trusting {@code --tls-ca}; and the role's
 * {@code dapr-api-token} ({@code --app-token APP=PATH}) as metadata on every call, the GetWorkItems stream included.
 * The token is read from its file, so it never appears on a command line.
 */
final class Dial {

  static final Metadata.Key<String> TOKEN = Metadata.Key.of("dapr-api-token", Metadata.ASCII_STRING_MARSHALLER);

  private final String tlsCa; // PEM file of the CA to trust, or null: plaintext
  private final Map<String, String> tokenFiles; // app role -> file holding its token

  Dial(String tlsCa, Map<String, String> tokenFiles) {
    this.tlsCa = tlsCa;
    this.tokenFiles = tokenFiles;
  }

  ManagedChannel channel(String app, String host, int port) {
    try {
      ManagedChannelBuilder<?> b;
      if (tlsCa == null) {
        b = ManagedChannelBuilder.forAddress(host, port).usePlaintext();
      } else {
        // The server name checked against the certificate is `host` (localhost or 127.0.0.1).
        b = Grpc.newChannelBuilderForAddress(
            host, port, TlsChannelCredentials.newBuilder().trustManager(new File(tlsCa)).build());
      }
      String file = tokenFiles.get(app);
      if (file != null) {
        Metadata headers = new Metadata();
        headers.put(TOKEN, Files.readString(Path.of(file)).strip());
        b.intercept(MetadataUtils.newAttachHeadersInterceptor(headers));
      }
      return b.build();
    } catch (IOException e) {
      throw new UncheckedIOException("dialing app " + app, e);
    }
  }
}
