// Streams LLM answers (server-sent events, as vLLM and OpenAI-compatible servers send them)
// through EasHttpClient, with a session key: every turn of one session goes to the same
// instance while its load allows (X-Session-Id is the affinity key), and the instance counts
// as busy until its stream ends, so other requests go elsewhere meanwhile.
//
//   java -cp bindings/java/target/easdirect-0.1.0.jar examples/java/StreamChat.java TARGET [SESSION] [TURNS]
//   e.g. TARGET = eas://1.2.3.4:8080/my_llm; the EAS service token, if any, in $EAS_TOKEN
import io.easdirect.EasClient;
import io.easdirect.InstanceStats;
import io.easdirect.http.EasHttpClient;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Iterator;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

public class StreamChat {
    private static final Pattern TEXT = Pattern.compile("\"text\":\"((?:[^\"\\\\]|\\\\.)*)\"");

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: StreamChat TARGET [SESSION] [TURNS]");
            System.exit(2);
        }
        String session = args.length > 1 ? args[1] : "session-42";
        int turns = args.length > 2 ? Integer.parseInt(args[2]) : 3;
        try (EasClient eas = EasClient.open(args[0])) {
            eas.waitReady(Duration.ofSeconds(5));
            String service = eas.serviceName().orElseThrow(
                    () -> new IllegalArgumentException("the target names no service"));
            EasHttpClient http = EasHttpClient.newBuilder(eas)
                    .token(System.getenv("EAS_TOKEN"))     // sent as Authorization; never printed
                    .affinityHeader("X-Session-Id")          // one session, one instance
                    .attemptTimeout(Duration.ofSeconds(10))  // to the first byte, per attempt
                    .build();
            // "my_llm" is not a valid URI host: the helper takes "my-llm" for it.
            URI uri = URI.create("http://" + service.replace('_', '-') + "/v1/completions");
            String first = null;
            boolean stayed = true;
            for (int turn = 1; turn <= turns; turn++) {
                HttpRequest req = HttpRequest.newBuilder(uri)
                        .header("Content-Type", "application/json")
                        .header("X-Session-Id", session)
                        .POST(HttpRequest.BodyPublishers.ofString(
                                "{\"prompt\":\"turn " + turn + "\",\"max_tokens\":12,\"stream\":true}"))
                        .build();
                HttpResponse<Stream<String>> resp = http.send(req, HttpResponse.BodyHandlers.ofLines());
                String instance = resp.uri().getAuthority();
                if (first == null) {
                    first = instance;
                }
                stayed &= instance.equals(first);
                System.out.printf("turn %d: %d from %s, in flight while streaming: %d%n  ", turn,
                        resp.statusCode(), instance, inFlight(eas));
                boolean done = false;
                try (Stream<String> lines = resp.body()) { // closing early would drop the stream
                    Iterator<String> it = lines.iterator();
                    while (it.hasNext()) {
                        String line = it.next();
                        if (line.equals("data: [DONE]")) {
                            done = true;
                        } else if (line.startsWith("data: ")) {
                            Matcher m = TEXT.matcher(line);
                            if (m.find()) {
                                System.out.print(m.group(1));
                            }
                        }
                    }
                }
                System.out.printf("%n  stream ended (%s), in flight now: %d%n",
                        done ? "[DONE]" : "cut", inFlight(eas));
                if (resp.statusCode() != 200 || !done) {
                    System.exit(1);
                }
            }
            System.out.println("session " + session + (stayed ? " stayed on " + first
                    : " moved (its instance was loaded)"));
        }
    }

    private static long inFlight(EasClient eas) {
        return eas.instanceStats().stream().mapToLong(InstanceStats::inFlight).sum();
    }
}
