"""Who the service is at each cloud, with no key stored anywhere when the platform has one.

    aws.py     the AWS credentials every AWS client shares: static keys, a web identity token
               (a file, or an ID token from Google's metadata server), else boto3's chain
    google.py  the credentials of the GCS transport: a credential file (service account,
               impersonation, workload identity federation from AWS with boto3's credentials),
               else Application Default Credentials (the metadata server, gcloud)

Both say which identity they use (`describe`), never a secret, and `check` turns a refusal
into one line naming the step that failed.
"""
