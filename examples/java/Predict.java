// Sends predict requests to a service through EasHttpClient: each goes to an instance picked by
// libeasdirect, and a failing instance is retried elsewhere and ejected.
//
//   java -cp bindings/java/target/easdirect-0.1.0.jar examples/java/Predict.java TARGET [N]
//   e.g. TARGET = eas://1.2.3.4:8080/my_service
import io.easdirect.EasClient;
import io.easdirect.http.EasHttpClient;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class Predict {
    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: Predict TARGET [N]");
            System.exit(2);
        }
        int n = args.length > 1 ? Integer.parseInt(args[1]) : 5;
        try (EasClient eas = EasClient.open(args[0])) {
            eas.waitReady(Duration.ofSeconds(5));
            String service = eas.serviceName().orElseThrow(
                    () -> new IllegalArgumentException("the target names no service"));
            HttpClient http = EasHttpClient.newBuilder(eas).build();
            // "my_service" is not a valid URI host: the helper also matches "my-service".
            URI uri = URI.create("http://" + service.replace('_', '-') + "/api/predict/" + service);
            for (int i = 0; i < n; i++) {
                HttpRequest req = HttpRequest.newBuilder(uri)
                        .header("Content-Type", "application/json")
                        .POST(HttpRequest.BodyPublishers.ofString("{\"input\": " + i + "}"))
                        .timeout(Duration.ofSeconds(5))
                        .build();
                HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString());
                System.out.println(resp.statusCode() + " from " + resp.uri().getAuthority() + ": "
                        + resp.body());
            }
        }
    }
}
